package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"

	psftp "github.com/openhaul/haul/protocol/sftp"
	"github.com/openhaul/haul/transfer"
)

// hintContext is what the hints need to know about the command.
type hintContext struct {
	op            string
	ep            transfer.Endpoint
	passwordGiven bool
	identity      bool
	knownHosts    string // the known_hosts file checked
	local         string
}

// hint returns what to do about err, or "": the fix the error itself
// cannot name because it depends on how haul was called.
func hint(err error, hc hintContext) string {
	var (
		hke *psftp.HostKeyError
		ua  x509.UnknownAuthorityError
		hne x509.HostnameError
	)
	keyscan := fmt.Sprintf("ssh-keyscan -p %s %s >> %s", hc.ep.Port, hc.ep.Host, hc.knownHosts)
	switch {
	case errors.Is(err, transfer.ErrAuth) && !hc.passwordGiven && !(hc.ep.Scheme == "sftp" && hc.identity):
		h := "no password was given: set HAUL_PASSWORD, use --password-file FILE, or add a line to ~/.netrc (machine " +
			hc.ep.Host + " login USER password PASSWORD)"
		if hc.ep.Scheme == "sftp" {
			h += ", or log in with a key: --identity FILE"
		}
		return h
	case errors.As(err, &hke) && hke.Revoked:
		return ""
	case errors.As(err, &hke) && len(hke.Expected) == 0:
		return fmt.Sprintf("%s does not know this server: check its key's fingerprint (%s) with the server's administrator, then record it with `%s` or by running again with --accept-new-host-key, or name another file with --known-hosts FILE",
			hc.knownHosts, hke.Received, keyscan)
	case errors.As(err, &hke):
		return fmt.Sprintf("if the server's key was really changed (ask its administrator), remove the old one with `ssh-keygen -R %s -f %s` and record the new one with `%s`",
			knownHostsName(hc.ep), hc.knownHosts, keyscan)
	case errors.Is(err, transfer.ErrHostKey) && hc.ep.Scheme == "sftp" && errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("there is no known_hosts file %s: record the server's key with `%s` after checking its fingerprint with the server's administrator (or run again with --accept-new-host-key, which creates the file and records the key it is shown), or name another file with --known-hosts FILE",
			hc.knownHosts, keyscan)
	case errors.As(err, &ua):
		return "the server's certificate is not signed by a trusted CA (self-signed?): give the CA's certificate, or the server's own for a self-signed one, in PEM with --ca-file FILE"
	case errors.As(err, &hne):
		return "the certificate does not name the host in the URL: connect by a name it holds (" + hostnames(hne.Certificate) + ")"
	case errors.Is(err, transfer.ErrNotRegular) && hc.op == "get":
		return "name a regular file or a directory; to discard the data: `haul get URL - >/dev/null`"
	case errors.Is(err, transfer.ErrNotRegular) && hc.op == "put":
		return "to upload a stream, pipe it into `haul put - URL`"
	}
	return ""
}

// knownHostsName is how known_hosts names the server.
func knownHostsName(ep transfer.Endpoint) string {
	if ep.Port == "22" {
		return ep.Host
	}
	return "'[" + ep.Host + "]:" + ep.Port + "'"
}

func hostnames(c *x509.Certificate) string {
	if c == nil {
		return "see the certificate"
	}
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, net.IP(ip).String())
	}
	if len(names) == 0 {
		return c.Subject.CommonName
	}
	s := names[0]
	for _, n := range names[1:] {
		s += ", " + n
	}
	return s
}
