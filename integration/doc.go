// Package integration holds haul's tests against real servers: vsftpd (plain,
// explicit FTPS, and a "limited" instance with short timeouts and a small
// max_per_ip), proftpd (FTP with mod_digest, SFTP with mod_sftp), pure-ftpd
// and OpenSSH sshd (internal-sftp), all started on 127.0.0.1 by
// integration/testbed/up.sh and described by the env file that
// github.com/openhaul/haul/integration/testbed loads.
//
// The tests are ordinary Go tests (no build tags). When the test bed is not
// running they skip with a message saying how to start it ("make up"), except
// with CI=true, where a missing test bed fails them. "make test" installs,
// starts and stops the servers around the whole test run.
//
// Host-level faults (a full tmpfs, max_per_ip, data_connection_timeout, a
// killed per-session server process, a socket destroyed with `ss -K`) are
// tested in testbed_test.go; wire-level faults go through the TCP proxy in
// integration/faultproxy.
package integration
