#!/usr/bin/env bash
# up.sh: start haul's real-server test bed on 127.0.0.1 (idempotent).
#
# Starts private instances of vsftpd (plain, explicit FTPS, limited, no upload
# lock, wrong PASV address), proftpd (FTP + mod_digest, SFTP via mod_sftp), pure-ftpd, two
# OpenSSH sshd (internal-sftp with exec allowed; ForceCommand internal-sftp),
# rclone serve sftp (in-order writes only) and pyftpdlib without REST,
# each with a generated config, its own data root and log
# under $HAUL_TESTBED_STATE (default /tmp/haul-testbed), then writes the
# key=value env file the Go tests read ($HAUL_TESTBED_ENV, default
# $HAUL_TESTBED_STATE/env). Run install.sh first. Needs root.
#
# Servers that are already running (pid file naming a live process) are left
# alone, so running up.sh again on a running test bed starts only the missing
# servers (for example ones added to this script since) and rewrites the env
# file; shared files (keys, known_hosts, configs) are replaced by rename.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then tb_log "must run as root"; exit 1; fi

PKG_ROOT="$HAUL_TESTBED_PKGS/root"
for b in /usr/sbin/vsftpd /usr/sbin/sshd "$PKG_ROOT/usr/sbin/proftpd" "$PKG_ROOT/usr/sbin/pure-ftpd" \
         /usr/bin/rclone /usr/bin/python3 /usr/bin/setpriv; do
  if [[ ! -x $b ]]; then tb_log "missing $b: run integration/testbed/install.sh first"; exit 1; fi
done
if ! /usr/bin/python3 -c 'import pyftpdlib' 2>/dev/null; then
  tb_log "missing python3-pyftpdlib: run integration/testbed/install.sh first"; exit 1
fi

# Ports (fixed: the fault proxy mirrors them on 127.0.0.2, 127.0.0.3, ...).
VSFTPD_PORT=2121;         VSFTPD_PASV=(30000 30019)
VSFTPS_PORT=2122;         VSFTPS_PASV=(30020 30039)
VSFTPD_LIMITED_PORT=2123; VSFTPD_LIMITED_PASV=(30040 30059)
PROFTPD_PORT=2124;        PROFTPD_PASV=(30060 30079)
PUREFTPD_PORT=2125;       PUREFTPD_PASV=(30080 30099)
VSFTPD_NOLOCK_PORT=2126;  VSFTPD_NOLOCK_PASV=(30100 30119)
PYFTPD_NOREST_PORT=2228;  PYFTPD_NOREST_PASV=(30120 30139)
VSFTPD_BADPASV_PORT=2129; VSFTPD_BADPASV_PASV=(30140 30159)
# The address the misconfigured vsftpd announces in PASV (TEST-NET-1: routes
# nowhere), as a server behind NAT with a wrong pasv_address does.
VSFTPD_BADPASV_ADDRESS=192.0.2.1
SSHD_PORT=2222
SSHD_NOEXEC_PORT=2223
PROFTPD_SFTP_PORT=2225
RCLONE_SFTP_PORT=2227
LIMITED_DATA_TIMEOUT=3
LIMITED_MAX_PER_IP=3
LIMITED_IDLE_TIMEOUT=10

umask 022
mkdir -p "$HAUL_TESTBED_STATE" "$RUN" "$LOGDIR" "$KEYS" "$ROOTS" "$CONFS" /run/sshd
chmod 755 "$HAUL_TESTBED_STATE" "$ROOTS"
chmod 755 "$KEYS"  # sshd reads authorized_keys as the user
# vsftpd's secure_chroot_dir: empty, root-owned, not writable by others.
mkdir -p "$HAUL_TESTBED_STATE/empty"; chown root:root "$HAUL_TESTBED_STATE/empty"; chmod 755 "$HAUL_TESTBED_STATE/empty"

# ---- test user -------------------------------------------------------------
U=$HAUL_TESTBED_USER
if ! id "$U" >/dev/null 2>&1; then
  tb_log "creating user $U"
  useradd -M -d "$ROOTS/pure-ftpd" -s /bin/bash "$U"
fi
# pure-ftpd (-A) chroots into the home directory: make it the pure-ftpd root.
[[ $(getent passwd "$U" | cut -d: -f6) == "$ROOTS/pure-ftpd" ]] || usermod -d "$ROOTS/pure-ftpd" "$U"
echo "$U:$HAUL_TESTBED_PASSWORD" | chpasswd
shell=$(getent passwd "$U" | cut -d: -f7)
grep -qxF "$shell" /etc/shells || echo "$shell" >>/etc/shells
if [[ -f /etc/ftpusers ]] && grep -qxF "$U" /etc/ftpusers; then
  sed -i "/^${U}\$/d" /etc/ftpusers
fi
UGROUP=$(id -gn "$U")

# ---- data roots and the full tmpfs --------------------------------------------
for r in vsftpd vsftpd-ftps vsftpd-limited vsftpd-nolock proftpd proftpd-sftp pure-ftpd sshd sshd-noexec \
         rclone-sftp pyftpd-norest vsftpd-badpasv; do
  mkdir -p "$ROOTS/$r"; chown "$U:$UGROUP" "$ROOTS/$r"; chmod 755 "$ROOTS/$r"
done
for r in "${TB_FULL[@]}"; do
  d="$ROOTS/$r/full"
  mkdir -p "$d"
  if ! mountpoint -q "$d"; then
    mount -t tmpfs -o "size=$HAUL_TESTBED_FULL_TMPFS_SIZE,mode=0755,uid=$(id -u "$U"),gid=$(id -g "$U")" haul-testbed-full "$d"
  fi
done

# ---- keys and certificates ---------------------------------------------------
if [[ ! -f $KEYS/ca.pem ]]; then
  tb_log "generating CA and server certificate"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=haul test bed CA" \
    -keyout "$KEYS/ca.key" -out "$KEYS/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$KEYS/server.key" -out "$KEYS/server.csr" 2>/dev/null
  san="DNS:localhost"
  for i in $(seq 1 9); do san+=",IP:127.0.0.$i"; done
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san" >"$KEYS/server.ext"
  openssl x509 -req -in "$KEYS/server.csr" -CA "$KEYS/ca.pem" -CAkey "$KEYS/ca.key" -CAcreateserial \
    -days 3650 -extfile "$KEYS/server.ext" -out "$KEYS/server.pem" 2>/dev/null
  chmod 600 "$KEYS/server.key" "$KEYS/ca.key"
fi
if [[ ! -f $KEYS/ssh_host_ed25519_key ]]; then
  ssh-keygen -q -t ed25519 -N '' -C haul-testbed-sshd -f "$KEYS/ssh_host_ed25519_key"
fi
if [[ ! -f $KEYS/ssh_host_noexec_ed25519_key ]]; then
  ssh-keygen -q -t ed25519 -N '' -C haul-testbed-sshd-noexec -f "$KEYS/ssh_host_noexec_ed25519_key"
fi
if [[ ! -f $KEYS/rclone_host_ed25519_key ]]; then
  ssh-keygen -q -t ed25519 -N '' -C haul-testbed-rclone-sftp -f "$KEYS/rclone_host_ed25519_key"
fi
# rclone serve sftp runs as the test user and reads its host key itself.
chown "$U:$UGROUP" "$KEYS/rclone_host_ed25519_key"
if [[ ! -f $KEYS/proftpd_host_rsa_key ]]; then
  ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C haul-testbed-proftpd -f "$KEYS/proftpd_host_rsa_key"
fi
if [[ ! -f $KEYS/client_ed25519 ]]; then
  ssh-keygen -q -t ed25519 -N '' -C "$U@haul-testbed" -f "$KEYS/client_ed25519"
fi
# Replaced by rename (tb_write_atomic): running servers read these files at
# every login.
tb_write_atomic "$KEYS/authorized_keys" <"$KEYS/client_ed25519.pub"
ssh-keygen -e -f "$KEYS/client_ed25519.pub" | tb_write_atomic "$KEYS/authorized_keys.rfc4716"
# Clients verify hosts against known_hosts: 127.0.0.1 and localhost, plus the
# fault proxy's addresses 127.0.0.2-9 on the same ports.
{
  hk_sshd=$(cut -d' ' -f1,2 "$KEYS/ssh_host_ed25519_key.pub")
  hk_noexec=$(cut -d' ' -f1,2 "$KEYS/ssh_host_noexec_ed25519_key.pub")
  hk_pro=$(cut -d' ' -f1,2 "$KEYS/proftpd_host_rsa_key.pub")
  hk_rclone=$(cut -d' ' -f1,2 "$KEYS/rclone_host_ed25519_key.pub")
  for h in localhost $(for i in $(seq 1 9); do echo "127.0.0.$i"; done); do
    echo "[$h]:$SSHD_PORT $hk_sshd"
    echo "[$h]:$SSHD_NOEXEC_PORT $hk_noexec"
    echo "[$h]:$PROFTPD_SFTP_PORT $hk_pro"
    echo "[$h]:$RCLONE_SFTP_PORT $hk_rclone"
  done
} | tb_write_atomic "$KEYS/known_hosts"
chmod 644 "$KEYS/ca.pem"

# ---- start helpers --------------------------------------------------------------
# start NAME PORT CMD...: start CMD in its own session unless already running.
start() {
  local name=$1 port=$2; shift 2
  if tb_alive "$name"; then
    tb_log "$name already running (pid $(tb_pid "$name"))"
    return 0
  fi
  if tb_port_busy "$port"; then
    tb_log "port $port is in use by another program; cannot start $name"
    ss -Htlnp "sport = :$port" >&2 || true
    return 1
  fi
  setsid "$@" </dev/null >>"$LOGDIR/$name.stdout" 2>&1 &
  tb_record "$name" $!
  if ! tb_wait_port "$port" 100; then
    tb_log "$name did not open port $port within 10s; see $LOGDIR/$name.stdout and logs"
    tail -n 20 "$LOGDIR/$name.stdout" >&2 || true
    return 1
  fi
  if ! tb_alive "$name"; then
    tb_log "$name exited; see $LOGDIR/$name.stdout"; tail -n 20 "$LOGDIR/$name.stdout" >&2 || true
    return 1
  fi
  tb_log "$name up on $HAUL_TESTBED_HOST:$port (pid $(tb_pid "$name"))"
}

vsftpd_conf() { # NAME PORT PMIN PMAX MAX_PER_IP DATA_TIMEOUT IDLE_TIMEOUT
  tb_render "$CONF_DIR/vsftpd.conf.tmpl" "$CONFS/$1.conf" \
    LISTEN_ADDR="$HAUL_TESTBED_HOST" PORT="$2" PASV_MIN="$3" PASV_MAX="$4" \
    ROOT="$ROOTS/$1" SECURE_DIR="$HAUL_TESTBED_STATE/empty" LOG="$LOGDIR/$1.log" \
    MAX_PER_IP="$5" DATA_TIMEOUT="$6" IDLE_TIMEOUT="$7"
}

fail=0
vsftpd_conf vsftpd "$VSFTPD_PORT" "${VSFTPD_PASV[@]}" 0 300 600
start vsftpd "$VSFTPD_PORT" /usr/sbin/vsftpd "$CONFS/vsftpd.conf" || fail=1

vsftpd_conf vsftpd-ftps "$VSFTPS_PORT" "${VSFTPS_PASV[@]}" 0 300 600
tb_render "$CONF_DIR/vsftpd-ftps.extra.tmpl" "$CONFS/vsftpd-ftps.extra" \
  CERT_FILE="$KEYS/server.pem" KEY_FILE="$KEYS/server.key"
cat "$CONFS/vsftpd-ftps.extra" >>"$CONFS/vsftpd-ftps.conf"
start vsftpd-ftps "$VSFTPS_PORT" /usr/sbin/vsftpd "$CONFS/vsftpd-ftps.conf" || fail=1

vsftpd_conf vsftpd-limited "$VSFTPD_LIMITED_PORT" "${VSFTPD_LIMITED_PASV[@]}" \
  "$LIMITED_MAX_PER_IP" "$LIMITED_DATA_TIMEOUT" "$LIMITED_IDLE_TIMEOUT"
start vsftpd-limited "$VSFTPD_LIMITED_PORT" /usr/sbin/vsftpd "$CONFS/vsftpd-limited.conf" || fail=1

# vsftpd without its upload locks (lock_upload_files=NO): several connections
# may write one file at once, as segmented FTP uploads need.
vsftpd_conf vsftpd-nolock "$VSFTPD_NOLOCK_PORT" "${VSFTPD_NOLOCK_PASV[@]}" 0 300 600
echo "lock_upload_files=NO" >>"$CONFS/vsftpd-nolock.conf"
start vsftpd-nolock "$VSFTPD_NOLOCK_PORT" /usr/sbin/vsftpd "$CONFS/vsftpd-nolock.conf" || fail=1

# vsftpd whose PASV reply names a wrong address (pasv_address), the classic
# NAT misconfiguration: clients that trust the address hang; haul connects
# to the control host and works; haul doctor reports it.
vsftpd_conf vsftpd-badpasv "$VSFTPD_BADPASV_PORT" "${VSFTPD_BADPASV_PASV[@]}" 0 300 600
echo "pasv_address=$VSFTPD_BADPASV_ADDRESS" >>"$CONFS/vsftpd-badpasv.conf"
start vsftpd-badpasv "$VSFTPD_BADPASV_PORT" /usr/sbin/vsftpd "$CONFS/vsftpd-badpasv.conf" || fail=1

tb_render "$CONF_DIR/proftpd.conf.tmpl" "$CONFS/proftpd.conf" \
  LISTEN_ADDR="$HAUL_TESTBED_HOST" PORT="$PROFTPD_PORT" PASV_MIN="${PROFTPD_PASV[0]}" PASV_MAX="${PROFTPD_PASV[1]}" \
  RUN="$RUN" LOGDIR="$LOGDIR" LOG="$LOGDIR/proftpd.log" MODULE_PATH="$PKG_ROOT/usr/lib/proftpd" \
  ROOT="$ROOTS/proftpd" SFTP_PORT="$PROFTPD_SFTP_PORT" SFTP_LOG="$LOGDIR/proftpd-sftp.log" \
  SFTP_CMD_LOG="$LOGDIR/proftpd-sftp-cmd.log" \
  SFTP_HOST_KEY="$KEYS/proftpd_host_rsa_key" SFTP_AUTHORIZED_KEYS="$KEYS/authorized_keys.rfc4716" \
  SFTP_ROOT="$ROOTS/proftpd-sftp"
# proftpd runs in the foreground (-n); its PidFile is written by itself too.
start proftpd "$PROFTPD_PORT" "$PKG_ROOT/usr/sbin/proftpd" -n -c "$CONFS/proftpd.conf" || fail=1
if ! tb_wait_port "$PROFTPD_SFTP_PORT" 50; then tb_log "proftpd mod_sftp not listening on $PROFTPD_SFTP_PORT"; fail=1; fi

# pure-ftpd: system users, chroot everyone (home = $ROOTS/pure-ftpd), no anonymous;
# -k 99: STOR into a file system more than 99% used is refused with 552.
start pure-ftpd "$PUREFTPD_PORT" "$PKG_ROOT/usr/sbin/pure-ftpd" \
  -S "$HAUL_TESTBED_HOST,$PUREFTPD_PORT" -l unix -p "${PUREFTPD_PASV[0]}:${PUREFTPD_PASV[1]}" \
  -E -A -H -4 -c 64 -C 64 -k 99 -O "clf:$LOGDIR/pure-ftpd-xfer.log" \
  -g "$RUN/pure-ftpd.daemon.pid" || fail=1

tb_render "$CONF_DIR/sshd_config.tmpl" "$CONFS/sshd_config" \
  PORT="$SSHD_PORT" LISTEN_ADDR="$HAUL_TESTBED_HOST" HOST_KEY="$KEYS/ssh_host_ed25519_key" \
  RUN="$RUN/sshd" AUTHORIZED_KEYS="$KEYS/authorized_keys" USER="$U" ROOT="$ROOTS/sshd"
mkdir -p "$RUN/sshd"
/usr/sbin/sshd -t -f "$CONFS/sshd_config" || fail=1
start sshd "$SSHD_PORT" /usr/sbin/sshd -D -f "$CONFS/sshd_config" -E "$LOGDIR/sshd.log" || fail=1

# A second sshd that forces internal-sftp on every session: exec requests
# (sha256sum over SSH) are refused, so verification falls back to size.
tb_render "$CONF_DIR/sshd_config.tmpl" "$CONFS/sshd-noexec_config" \
  PORT="$SSHD_NOEXEC_PORT" LISTEN_ADDR="$HAUL_TESTBED_HOST" HOST_KEY="$KEYS/ssh_host_noexec_ed25519_key" \
  RUN="$RUN/sshd-noexec" AUTHORIZED_KEYS="$KEYS/authorized_keys" USER="$U" ROOT="$ROOTS/sshd-noexec"
tb_render "$CONF_DIR/sshd-noexec.extra.tmpl" "$CONFS/sshd-noexec.extra" ROOT="$ROOTS/sshd-noexec"
cat "$CONFS/sshd-noexec.extra" >>"$CONFS/sshd-noexec_config"
mkdir -p "$RUN/sshd-noexec"
/usr/sbin/sshd -t -f "$CONFS/sshd-noexec_config" || fail=1
start sshd-noexec "$SSHD_NOEXEC_PORT" /usr/sbin/sshd -D -f "$CONFS/sshd-noexec_config" -E "$LOGDIR/sshd-noexec.log" || fail=1

# rclone serve sftp over a local directory with --vfs-cache-mode off: writes
# go straight into the file in offset order (a write ahead of the file's end
# waits --vfs-write-wait, 1 s, for the gap to fill, then fails with "Illegal
# seek"), like servers that stream uploads into an object store. No directory
# cache (--dir-cache-time 0s), so that files tests put into or remove from its
# root directly are seen at once. Runs as the test user; its config and cache
# stay in the state dir.
mkdir -p "$RUN/rclone-sftp.home"; chown "$U:$UGROUP" "$RUN/rclone-sftp.home"
touch "$LOGDIR/rclone-sftp.log" "$LOGDIR/pyftpd-norest.log"
chown "$U:$UGROUP" "$LOGDIR/rclone-sftp.log" "$LOGDIR/pyftpd-norest.log"
: | tb_write_atomic "$CONFS/rclone-sftp.conf"
start rclone-sftp "$RCLONE_SFTP_PORT" /usr/bin/setpriv --reuid="$U" --regid="$UGROUP" --init-groups \
  /usr/bin/env HOME="$RUN/rclone-sftp.home" \
  /usr/bin/rclone serve sftp "$ROOTS/rclone-sftp" \
  --addr "$HAUL_TESTBED_HOST:$RCLONE_SFTP_PORT" --user "$U" --pass "$HAUL_TESTBED_PASSWORD" \
  --key "$KEYS/rclone_host_ed25519_key" --authorized-keys "$KEYS/authorized_keys" \
  --vfs-cache-mode off --dir-cache-time 0s --config "$CONFS/rclone-sftp.conf" --cache-dir "$RUN/rclone-sftp.home/cache" \
  --log-file "$LOGDIR/rclone-sftp.log" --log-level INFO || fail=1

# pyftpdlib with REST answered "502 Command 'REST' not implemented": no
# resume in either direction. The script is copied into the state dir (the
# test user may not be able to read the work tree); the password goes by
# environment, not argv.
install -m 644 "$TB_DIR/pyftpd_norest.py" "$CONFS/pyftpd_norest.py"
start pyftpd-norest "$PYFTPD_NOREST_PORT" /usr/bin/setpriv --reuid="$U" --regid="$UGROUP" --init-groups \
  /usr/bin/env HAUL_PYFTPD_PASSWORD="$HAUL_TESTBED_PASSWORD" \
  /usr/bin/python3 "$CONFS/pyftpd_norest.py" --host "$HAUL_TESTBED_HOST" --port "$PYFTPD_NOREST_PORT" \
  --root "$ROOTS/pyftpd-norest" --user "$U" --pasv "${PYFTPD_NOREST_PASV[0]}-${PYFTPD_NOREST_PASV[1]}" \
  --log "$LOGDIR/pyftpd-norest.log" || fail=1

if [[ $fail -ne 0 ]]; then
  tb_log "some servers failed to start (env file not written); run down.sh to clean up"
  exit 1
fi

# ---- env file ---------------------------------------------------------------------
pid() { tb_pid "$1"; }
tmp_env="$HAUL_TESTBED_ENV.tmp.$$"
mkdir -p "$(dirname "$HAUL_TESTBED_ENV")"
{
  echo "# haul test bed, written by integration/testbed/up.sh at $(date -u +%FT%TZ)"
  echo "# Remote paths (*_HOME, *_FULL_DIR) are as the client sees them after login."
  echo "STATE_DIR=$HAUL_TESTBED_STATE"
  echo "HOST=$HAUL_TESTBED_HOST"
  echo "USER=$U"
  echo "PASSWORD=$HAUL_TESTBED_PASSWORD"
  echo "CA_FILE=$KEYS/ca.pem"
  echo "TLS_SERVER_NAME=localhost"
  echo "SSH_KEY_FILE=$KEYS/client_ed25519"
  echo "SSH_PUBLIC_KEY_FILE=$KEYS/client_ed25519.pub"
  echo "KNOWN_HOSTS_FILE=$KEYS/known_hosts"
  echo "FULL_SIZE=$(( $(df -B1 --output=size "$ROOTS/vsftpd/full" | tail -n1) ))"
  # name prefix port pasv_min pasv_max root home full_dir log pid
  emit() {
    local p=$1
    echo "${p}_PORT=$2"
    [[ -n $3 ]] && echo "${p}_PASV_MIN=$3" && echo "${p}_PASV_MAX=$4"
    echo "${p}_ROOT=$5"
    echo "${p}_HOME=$6"
    [[ -n $7 ]] && echo "${p}_FULL_DIR=$7" && echo "${p}_FULL_LOCAL=$5/full"
    echo "${p}_LOG=$8"
    echo "${p}_PID=$9"
  }
  emit VSFTPD "$VSFTPD_PORT" "${VSFTPD_PASV[@]}" "$ROOTS/vsftpd" / /full "$LOGDIR/vsftpd.log" "$(pid vsftpd)"
  emit VSFTPS "$VSFTPS_PORT" "${VSFTPS_PASV[@]}" "$ROOTS/vsftpd-ftps" / "" "$LOGDIR/vsftpd-ftps.log" "$(pid vsftpd-ftps)"
  emit VSFTPD_LIMITED "$VSFTPD_LIMITED_PORT" "${VSFTPD_LIMITED_PASV[@]}" "$ROOTS/vsftpd-limited" / "" \
    "$LOGDIR/vsftpd-limited.log" "$(pid vsftpd-limited)"
  echo "VSFTPD_LIMITED_DATA_TIMEOUT=$LIMITED_DATA_TIMEOUT"
  echo "VSFTPD_LIMITED_MAX_PER_IP=$LIMITED_MAX_PER_IP"
  echo "VSFTPD_LIMITED_IDLE_TIMEOUT=$LIMITED_IDLE_TIMEOUT"
  emit VSFTPD_NOLOCK "$VSFTPD_NOLOCK_PORT" "${VSFTPD_NOLOCK_PASV[@]}" "$ROOTS/vsftpd-nolock" / "" \
    "$LOGDIR/vsftpd-nolock.log" "$(pid vsftpd-nolock)"
  emit PROFTPD "$PROFTPD_PORT" "${PROFTPD_PASV[@]}" "$ROOTS/proftpd" / "" "$LOGDIR/proftpd.log" "$(pid proftpd)"
  emit PROFTPD_SFTP "$PROFTPD_SFTP_PORT" "" "" "$ROOTS/proftpd-sftp" / "" "$LOGDIR/proftpd-sftp.log" "$(pid proftpd)"
  emit PUREFTPD "$PUREFTPD_PORT" "${PUREFTPD_PASV[@]}" "$ROOTS/pure-ftpd" / /full "$LOGDIR/pure-ftpd-xfer.log" "$(pid pure-ftpd)"
  emit SSHD "$SSHD_PORT" "" "" "$ROOTS/sshd" "$ROOTS/sshd" "$ROOTS/sshd/full" "$LOGDIR/sshd.log" "$(pid sshd)"
  emit SSHD_NOEXEC "$SSHD_NOEXEC_PORT" "" "" "$ROOTS/sshd-noexec" "$ROOTS/sshd-noexec" "" \
    "$LOGDIR/sshd-noexec.log" "$(pid sshd-noexec)"
  emit RCLONE_SFTP "$RCLONE_SFTP_PORT" "" "" "$ROOTS/rclone-sftp" / "" "$LOGDIR/rclone-sftp.log" "$(pid rclone-sftp)"
  emit VSFTPD_BADPASV "$VSFTPD_BADPASV_PORT" "${VSFTPD_BADPASV_PASV[@]}" "$ROOTS/vsftpd-badpasv" / "" \
    "$LOGDIR/vsftpd-badpasv.log" "$(pid vsftpd-badpasv)"
  echo "VSFTPD_BADPASV_ADDRESS=$VSFTPD_BADPASV_ADDRESS"
  emit PYFTPD_NOREST "$PYFTPD_NOREST_PORT" "${PYFTPD_NOREST_PASV[@]}" "$ROOTS/pyftpd-norest" / "" \
    "$LOGDIR/pyftpd-norest.log" "$(pid pyftpd-norest)"
} >"$tmp_env"
chmod 644 "$tmp_env"
mv -f "$tmp_env" "$HAUL_TESTBED_ENV"
tb_log "test bed up; env file: $HAUL_TESTBED_ENV"
