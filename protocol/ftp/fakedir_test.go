package ftp_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// dirFake adds directory commands to a fakeServer through its override
// hook: FEAT (with or without MLST), MLST, MLSD, LIST, MKD and PRET. A
// listing is whatever listing returns for the command line; directories
// created by MKD go into the fake's dirs, next to its files.
type dirFake struct {
	s    *fakeServer
	mlst bool // FEAT offers MLST (jlaffaye then lists with MLSD)
	// listing returns the lines of the listing asked for by verb ("MLSD"
	// or "LIST") and arg, or a reply code (non-zero) to refuse it with.
	listing func(verb, arg string) (lines []string, code int)
	// stream, when set, writes the listing's data itself (instead of
	// listing); it returns false to drop the session without a reply.
	stream func(verb, arg string, d net.Conn) bool
	// mkd, when set, answers MKD instead of the fake file system.
	mkd func(arg string) (code int, text string)
	// mkdText is the text of a refused MKD ("Create directory operation
	// failed.", as vsftpd says, when empty).
	mkdText string
	// early226 sends the final reply with the 150, before the data (the
	// client reads it ahead, as pure-ftpd's replies often are).
	early226 bool
}

// withDirs returns a configure function installing d on the fake.
func withDirs(d *dirFake) func(*fakeServer) {
	return func(s *fakeServer) {
		d.s = s
		s.override = d.command
	}
}

func (d *dirFake) command(fc *fakeConn, verb, arg string) (handled, keep bool) {
	s := d.s
	switch verb {
	case "FEAT":
		feat := " SIZE\r\n MDTM\r\n EPSV\r\n REST STREAM\r\n"
		if d.mlst {
			feat += " MLST type*;size*;modify*;\r\n"
		}
		fmt.Fprintf(fc.c, "211-Features:\r\n%s211 End\r\n", feat)
	case "MLST":
		if !d.mlst {
			return false, true
		}
		s.mu.Lock()
		b, isFile := s.files[arg]
		isDir := s.dirs[arg]
		s.mu.Unlock()
		switch {
		case isDir:
			fmt.Fprintf(fc.c, "250-Listing %s\r\n type=dir;modify=20240102030405; %s\r\n250 End\r\n", arg, arg)
		case isFile:
			fmt.Fprintf(fc.c, "250-Listing %s\r\n type=file;size=%d;modify=20240102030405; %s\r\n250 End\r\n", arg, len(b), arg)
		default:
			fc.reply(550, "No such file or directory")
		}
	case "MLSD", "LIST":
		if verb == "MLSD" && !d.mlst {
			fc.reply(500, "Unknown command.")
			return true, true
		}
		return true, d.list(fc, verb, arg)
	case "MKD":
		if d.mkd != nil {
			code, text := d.mkd(arg)
			fc.reply(code, text)
			return true, true
		}
		text := d.mkdText
		if text == "" {
			text = "Create directory operation failed."
		}
		s.mu.Lock()
		_, isFile := s.files[arg]
		exists := isFile || s.dirs[arg]
		parent := ""
		if i := strings.LastIndex(arg, "/"); i > 0 {
			parent = arg[:i]
		}
		parentOK := parent == "" || s.dirs[parent]
		if !exists && parentOK {
			s.dirs[arg] = true
		}
		s.mu.Unlock()
		if exists || !parentOK {
			fc.reply(550, text)
		} else {
			fc.reply(257, fmt.Sprintf("%q created", "/"+arg))
		}
	default:
		return false, true
	}
	return true, true
}

// list serves MLSD or LIST; false ends the session.
func (d *dirFake) list(fc *fakeConn, verb, arg string) bool {
	var lines []string
	if d.stream == nil {
		var code int
		lines, code = d.listing(verb, arg)
		if code != 0 {
			if fc.dataLn != nil {
				_ = fc.dataLn.Close()
				fc.dataLn = nil
			}
			fc.reply(code, "listing refused")
			return true
		}
	}
	c := fc.acceptData()
	if c == nil {
		return true
	}
	defer c.Close()
	if d.early226 {
		fmt.Fprintf(fc.c, "150 Here comes the directory listing.\r\n226 Directory send OK.\r\n")
	} else {
		fc.reply(150, "Here comes the directory listing.")
	}
	if d.stream != nil {
		if !d.stream(verb, arg, c) {
			return false
		}
	} else {
		w := bufio.NewWriter(c)
		for _, l := range lines {
			if _, err := w.WriteString(l + "\r\n"); err != nil {
				break
			}
		}
		if err := w.Flush(); err != nil {
			fc.reply(426, "Failure writing network stream.")
			return true
		}
	}
	_ = c.Close()
	if !d.early226 {
		fc.reply(226, "Directory send OK.")
	}
	return true
}

// waitClosed blocks until the client closes the data connection (bounded:
// a deadline of ten seconds).
func waitClosed(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}
