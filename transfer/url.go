package transfer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/openhaul/haul/protocol"
)

var errUnsupportedScheme = errors.New("unsupported URL scheme")

// Endpoint is a parsed server URL.
type Endpoint struct {
	// Scheme is "ftp", "ftps" (explicit TLS), "ftps+implicit" or "sftp".
	Scheme string
	// Host is the server's host name or address, without port.
	Host string
	// Port is the server's port (defaults: 21, 21, 990, 22).
	Port string
	// User is the login name the URL gives, or "" when it gives none:
	// then Config.User is used, else "anonymous" for FTP (SFTP needs
	// one: the current user's name is not guessed).
	User string
	// Path is the remote path the URL names, following haul's rule: a
	// URL path is relative to the login directory ("ftp://h/dir/f" is
	// "dir/f"); a path that starts with "//" is absolute
	// ("sftp://h//srv/f" is "/srv/f"); curl's "/~/" prefix also means the
	// login directory. A path that ends in "/" names a directory.
	Path string

	password string
}

// Addr returns host:port.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, e.Port) }

// HasPassword reports whether the URL carries a (non-empty) password.
func (e Endpoint) HasPassword() bool { return e.password != "" }

// String returns the URL with any password removed.
func (e Endpoint) String() string {
	u := url.URL{Scheme: e.Scheme, Host: e.Addr()}
	if e.User != "" {
		u.User = url.User(e.User)
	}
	if e.Path != "" {
		u.Path = "/" + e.Path
	}
	return u.String()
}

// Redact returns rawURL with its password removed, or a placeholder when it
// does not parse. It never returns the password.
func Redact(rawURL string) string {
	e, err := ParseURL(rawURL)
	if err != nil {
		return "<invalid URL>"
	}
	return e.String()
}

// ParseURL parses an ftp://, ftps://, ftps+implicit:// or sftp:// URL.
// A URL that cannot name a server yields a *URLError (ErrInvalidURL); a
// path with CR, LF or NUL yields ErrInvalidPath. Errors never include the
// password.
func ParseURL(rawURL string) (Endpoint, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password included: do not wrap it.
		return Endpoint{}, &URLError{Err: errors.New("malformed (want scheme://[user@]host[:port]/path)")}
	}
	bad := func(format string, a ...any) error {
		shown := *u
		if u.User != nil {
			shown.User = url.User(u.User.Username())
		}
		return &URLError{URL: shown.String(), Err: fmt.Errorf(format, a...)}
	}
	e := Endpoint{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Port: u.Port()}
	var defPort string
	switch e.Scheme {
	case "ftp", "ftps":
		defPort = "21"
	case "ftps+implicit":
		defPort = "990"
	case "sftp":
		defPort = "22"
	default:
		return Endpoint{}, bad("%w %q (want ftp, ftps, ftps+implicit or sftp)", errUnsupportedScheme, e.Scheme)
	}
	switch {
	case u.Opaque != "":
		return Endpoint{}, bad("want %s://host/path", e.Scheme)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return Endpoint{}, bad("a query or fragment (write ? as %%3F and # as %%23 in a file name)")
	}
	if err := checkHost(u.Host, e.Host); err != nil {
		return Endpoint{}, bad("%v", err)
	}
	if e.Port == "" {
		e.Port = defPort
	} else if n, err := strconv.Atoi(e.Port); err != nil || n < 1 || n > 65535 {
		return Endpoint{}, bad("port %s is not in 1-65535", e.Port)
	}
	if u.User != nil {
		e.User = u.User.Username()
		e.password, _ = u.User.Password()
	}
	p := u.Path
	switch {
	case strings.HasPrefix(p, "//"):
		p = p[1:]
	case strings.HasPrefix(p, "/~/"):
		p = p[3:]
	default:
		p = strings.TrimPrefix(p, "/")
	}
	e.Path = p
	if p != "" {
		if err := protocol.CheckPath(p); err != nil {
			return Endpoint{}, err
		}
	}
	return e, nil
}

// checkHost rejects a host that no server can have: none, a colon outside
// brackets ("ftp://::"), an empty label. (url.Parse already refuses a
// bracketed host that is not an IP address.)
func checkHost(hostport, name string) error {
	switch {
	case name == "":
		return errors.New("no host")
	case strings.HasPrefix(hostport, "["):
		return nil
	case strings.Contains(name, ":"):
		return fmt.Errorf("host %q: put an IPv6 address in brackets ([::1]:21)", name)
	case strings.Contains(name, "..") || strings.HasPrefix(name, "."):
		return fmt.Errorf("host %q has an empty label", name)
	}
	return nil
}
