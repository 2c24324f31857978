#!/bin/sh
# Creates the test user (TEST_USER / TEST_PASSWORD, home /home/$TEST_USER,
# the root of both servers' view), then runs sshd (port 22) in the
# background and vsftpd (port 21) in the foreground.
set -eu
: "${TEST_USER:=tester}" "${TEST_PASSWORD:=tester-pw}" "${PASV_ADDRESS:=127.0.0.1}"
if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd -m -s /bin/bash "$TEST_USER"
fi
echo "$TEST_USER:$TEST_PASSWORD" | chpasswd
mkdir -p /run/sshd /var/run/vsftpd/empty
ssh-keygen -A >/dev/null
/usr/sbin/sshd -E /proc/self/fd/2
# The address vsftpd puts in its PASV replies: where the client reaches the
# published passive ports.
exec /usr/sbin/vsftpd -opasv_address="$PASV_ADDRESS" /etc/vsftpd-test.conf
