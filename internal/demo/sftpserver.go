package demo

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpServer is the demo's in-process SSH server: password login for one
// user, a host key generated at start, and one subsystem, sftp, served by
// pkg/sftp's Server (already haul's SFTP client library, a well-used
// server: open flags, offsets, posix-rename@openssh.com and
// statvfs@openssh.com as OpenSSH's sftp-server) with the root as its working
// directory, which haul's relative URL paths resolve against. Exec requests
// (haul's probe for sha256sum) are refused: haul then verifies by size, as
// against any server without a hash.
type sftpServer struct {
	ln      net.Listener
	hostKey ssh.Signer
	cfg     *ssh.ServerConfig
	root    string
	events  *notifier

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// newSFTPServer listens on 127.0.0.1 (a random port) and serves root.
func newSFTPServer(root, user, password string, events *notifier) (*sftpServer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			ok := subtle.ConstantTimeCompare([]byte(c.User()), []byte(user)) == 1
			if subtle.ConstantTimeCompare(pw, []byte(password)) == 1 && ok {
				return nil, nil
			}
			return nil, errors.New("denied")
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sftpServer{ln: ln, hostKey: signer, cfg: cfg, root: root, events: events, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// port returns the SSH port.
func (s *sftpServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops the server and its sessions and waits for its goroutines.
func (s *sftpServer) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	s.wg.Wait()
}

func (s *sftpServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *sftpServer) serveConn(c net.Conn) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ssh.DiscardRequests(reqs) // keepalive@openssh.com gets a failure reply: a live server
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "session channels only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ch.Close()
			started := false
			for req := range creqs {
				ok := !started && req.Type == "subsystem" && len(req.Payload) > 4 && string(req.Payload[4:]) == "sftp"
				_ = req.Reply(ok, nil)
				if !ok {
					continue
				}
				started = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer ch.Close()
					s.serveSFTP(ch)
				}()
			}
		}()
	}
}

func (s *sftpServer) serveSFTP(ch io.ReadWriteCloser) {
	srv, err := sftp.NewServer(&sftpSniffer{ReadWriteCloser: ch, n: s.events}, sftp.WithServerWorkingDirectory(s.root))
	if err != nil {
		return
	}
	_ = srv.Serve()
	_ = srv.Close()
}
