package sftp

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/openhaul/haul/protocol"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyCallbacks returns the callback that verifies the server's host
// key during the handshake, and lookup, which only reads the known_hosts
// file as it was when the dial began (hostKeyAlgorithms asks it which key
// types are known, with a placeholder key that must never be recorded).
// lookup is nil with WithInsecureIgnoreHostKey.
func hostKeyCallbacks(o *options) (verify, lookup ssh.HostKeyCallback, err error) {
	if o.insecure {
		return ssh.InsecureIgnoreHostKey(), nil, nil
	}
	lookup, err = readKnownHosts(o.knownHosts, o.acceptNew)
	if err != nil {
		return nil, nil, fmt.Errorf("reading known_hosts: %w", err)
	}
	if !o.acceptNew {
		return lookup, lookup, nil
	}
	a := &acceptNew{file: o.knownHosts, lookup: lookup, recorded: o.onNewHostKey, log: o.logger}
	return a.verify, lookup, nil
}

// readKnownHosts reads file; with missingOK, a file that does not exist
// knows no host.
func readKnownHosts(file string, missingOK bool) (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(file)
	if missingOK && errors.Is(err, fs.ErrNotExist) {
		return knownhosts.New()
	}
	return cb, err
}

// unknownHost reports whether err, from a known_hosts callback, says that
// the file has no key at all for the host (a key other than the one
// presented is a *KeyError with Want set; a revoked key another error).
func unknownHost(err error) bool {
	var ke *knownhosts.KeyError
	return errors.As(err, &ke) && len(ke.Want) == 0
}

// knownHostsMu serializes the recording of new host keys in this process:
// the segments of one transfer dial the same new host at once, and each
// would otherwise append the same line.
var knownHostsMu sync.Mutex

// acceptNew is the host key check of WithAcceptNewHostKey.
type acceptNew struct {
	file     string
	lookup   ssh.HostKeyCallback
	recorded func(host string, key ssh.PublicKey)
	log      *slog.Logger
}

// verify accepts a key the file holds, and records and accepts the key of
// a host the file does not know. Any other answer of the file (another
// key, a revoked key) is returned as the file gave it.
func (a *acceptNew) verify(host string, remote net.Addr, key ssh.PublicKey) error {
	if err := a.lookup(host, remote, key); !unknownHost(err) {
		return err
	}
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	// Another dial, of this process or another, may have recorded a key
	// since this dial read the file: that key decides.
	now, err := readKnownHosts(a.file, true)
	if err != nil {
		return a.recordError(err)
	}
	if err := now(host, remote, key); !unknownHost(err) {
		return err
	}
	name := knownhosts.Normalize(host)
	if err := appendLine(a.file, knownhosts.Line([]string{name}, key)); err != nil {
		return a.recordError(err)
	}
	a.log.Info("sftp: new host key recorded", "host", name, "type", key.Type(),
		"fingerprint", ssh.FingerprintSHA256(key), "file", a.file)
	if a.recorded != nil {
		a.recorded(name, key)
	}
	return nil
}

// recordError is the error of a new host key that could not be recorded:
// the server's identity stays unverified.
func (a *acceptNew) recordError(err error) error {
	return &protocol.Error{Op: "dial", Kind: protocol.ErrHostKey,
		Err: fmt.Errorf("recording a new host key in %s: %w", a.file, err)}
}

// appendLine appends line to file, creating the file with mode 0600 (and
// its directory with 0700) when it does not exist, and first ending a
// last line that lacks its newline.
func appendLine(file, line string) (err error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil && err != io.EOF {
			return err
		}
		if last[0] != '\n' {
			line = "\n" + line
		}
	}
	_, err = f.WriteString(line + "\n")
	return err
}
