package transfer

import (
	"fmt"

	"github.com/openhaul/haul/protocol"
)

// DialerFor returns the protocol.Dialer that a Client opened on ep with
// cfg uses for its sessions: the same credentials (the URL's, else
// cfg.User and cfg.Password, else anonymous for FTP), the same host-key
// (known_hosts) and TLS (certificate verification) rules, keepalive and
// dial timeout, and at most one login per call. It exists for diagnostics
// (haul doctor), which must connect exactly as a transfer would; a
// rejected login is never retried by it. The Dialer's sessions are
// *ftp.Session or *sftp.Session of haul's protocol packages.
func DialerFor(ep Endpoint, cfg Config) (protocol.Dialer, error) {
	if ep.password == "" {
		ep.password = cfg.Password
	}
	if ep.User == "" {
		ep.User = cfg.User
	}
	if ep.User == "" && ep.Scheme != "sftp" {
		ep.User = "anonymous"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch ep.Scheme {
	case "ftp", "ftps", "ftps+implicit":
		return ftpDialer(ep, cfg)
	case "sftp":
		return sftpDialer(ep, cfg)
	}
	return nil, &URLError{URL: ep.String(), Err: fmt.Errorf("%w %q", errUnsupportedScheme, ep.Scheme)}
}
