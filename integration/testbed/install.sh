#!/usr/bin/env bash
# install.sh: install the real servers haul's integration tests run against.
#
# Idempotent. Needs root and apt-get (Debian 12). vsftpd, proftpd-core and
# pure-ftpd conflict in Debian (all provide ftp-server), so vsftpd is
# installed normally and proftpd + pure-ftpd are unpacked with `dpkg -x` into
# a private tree ($HAUL_TESTBED_PKGS, default /opt/haul-testbed/pkgs) and run
# from there by up.sh. rclone (`rclone serve sftp`) and python3-pyftpdlib
# (integration/testbed/pyftpd_norest.py) start no service of their own. No
# packaged service is left running: up.sh starts private instances on high
# ports.
set -euo pipefail

PKGS_DIR="${HAUL_TESTBED_PKGS:-/opt/haul-testbed/pkgs}"
# libsodium23: proftpd's mod_sftp and pure-ftpd (unpacked with dpkg -x, so
# apt does not pull their dependencies) need it; a full Debian install often
# has it already, a minimal one (debian:12 image, debootstrap) does not.
APT_PKGS=(vsftpd openssh-server iptables iproute2 libhiredis0.14 libmemcached11
          libmemcachedutil2 libpcre2-posix3 libsodium23 lftp curl openssl
          rclone python3-pyftpdlib)
X_PKGS=(proftpd-core proftpd-mod-crypto pure-ftpd)

log() { printf 'install.sh: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root"; exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "apt-get not found (this script supports Debian/Ubuntu only)"; exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep packaged services from starting during installation (no systemd here
# anyway, but invoke-rc.d honours policy-rc.d).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt_updated=0
apt_update_once() {
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
}

missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing: ${missing[*]}"
  # A fresh machine has empty package lists: update first then.
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt_update_once; fi
  if ! apt-get install -y -qq "${missing[@]}"; then
    apt_update_once
    apt-get install -y -qq "${missing[@]}"
  fi
fi

# Stop packaged instances if the installation started any (we use our own
# ports, but a packaged vsftpd on :21 or sshd on :22 is not ours to leave).
if [[ -f /run/sshd.pid ]]; then
  pid=$(cat /run/sshd.pid 2>/dev/null || true)
  if [[ -n $pid ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null || true) == */sshd ]] \
     && ! grep -q haul-testbed "/proc/$pid/cmdline" 2>/dev/null; then
    log "stopping packaged sshd (pid $pid)"; kill "$pid" || true
  fi
fi
if command -v service >/dev/null 2>&1; then
  service vsftpd stop >/dev/null 2>&1 || true
fi

# Private, dpkg -x'd copies of proftpd and pure-ftpd.
mkdir -p "$PKGS_DIR/debs" "$PKGS_DIR/root"
# apt-get download fetches as _apt when that user can write the directory.
if id _apt >/dev/null 2>&1; then chown _apt "$PKGS_DIR/debs" 2>/dev/null || true; fi
for p in "${X_PKGS[@]}"; do
  stamp="$PKGS_DIR/.$p.extracted"
  if [[ -f $stamp ]]; then continue; fi
  if ! ls "$PKGS_DIR/debs/${p}_"*.deb >/dev/null 2>&1; then
    log "apt-get download $p"
    if ! (cd "$PKGS_DIR/debs" && apt-get download -qq "$p"); then
      apt_update_once
      (cd "$PKGS_DIR/debs" && apt-get download -qq "$p")
    fi
  fi
  deb=$(ls "$PKGS_DIR/debs/${p}_"*.deb | head -n1)
  log "dpkg -x $deb"
  dpkg -x "$deb" "$PKGS_DIR/root"
  touch "$stamp"
done

if ! /usr/bin/python3 -c 'import pyftpdlib' 2>/dev/null; then
  log "python3-pyftpdlib installed but /usr/bin/python3 cannot import pyftpdlib"; exit 1
fi
for b in "$PKGS_DIR/root/usr/sbin/proftpd" "$PKGS_DIR/root/usr/sbin/pure-ftpd" \
         "$PKGS_DIR/root/usr/lib/proftpd/mod_sftp.so" "$PKGS_DIR/root/usr/lib/proftpd/mod_digest.so"; do
  if [[ ! -e $b ]]; then log "missing after extraction: $b"; exit 1; fi
done
log "ok (private packages in $PKGS_DIR/root)"
