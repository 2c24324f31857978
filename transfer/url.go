package transfer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
	// User is the login name ("anonymous" for FTP without one; the
	// current user's name is not guessed for SFTP: it must be given).
	User string
	// Path is the remote path the URL names, following haul's rule: a
	// URL path is relative to the login directory ("ftp://h/dir/f" is
	// "dir/f"); a path that starts with "//" is absolute
	// ("sftp://h//srv/f" is "/srv/f"); curl's "/~/" prefix also means the
	// login directory.
	Path string

	password string
}

// Addr returns host:port.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, e.Port) }

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
// Errors never include the password.
func ParseURL(rawURL string) (Endpoint, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password included: do not wrap it.
		return Endpoint{}, &protocol.Error{Op: "parse URL", Kind: protocol.ErrInvalidPath, Err: errors.New("malformed URL")}
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
		return Endpoint{}, fmt.Errorf("%w %q (want ftp, ftps, ftps+implicit or sftp)", errUnsupportedScheme, e.Scheme)
	}
	if e.Port == "" {
		e.Port = defPort
	}
	if e.Host == "" {
		return Endpoint{}, &protocol.Error{Op: "parse URL", Kind: protocol.ErrInvalidPath, Err: errors.New("no host in URL")}
	}
	if u.User != nil {
		e.User = u.User.Username()
		e.password, _ = u.User.Password()
	}
	if e.User == "" && e.Scheme != "sftp" {
		e.User = "anonymous"
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
