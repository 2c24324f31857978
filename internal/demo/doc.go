// Package demo is haul's demonstration lab: an FTP and an SFTP server in
// this process, on 127.0.0.1 and random ports, behind a link that cuts and
// blackholes connections at chosen byte counts (integration/faultproxy),
// and a scenario that moves a generated file both ways over both protocols
// through haul's command line and tabulates the cuts, resumes, re-sent
// bytes and verifications. It backs the `haul demo` command and its test.
//
// Start creates everything under one temporary directory, generates the
// host key of the SSH server and a random password, and writes a
// known_hosts file and a password file for haul's --known-hosts and
// --password-file; Lab.Close stops everything and removes the directory.
// Lab.Run runs the scenario with a Runner (the haul CLI's entry point) and
// WriteTable prints its rows.
//
// The FTP server is written here (see ftpServer for why not
// goftp.io/server/v2); the SFTP server is pkg/sftp's, over
// golang.org/x/crypto/ssh.
package demo
