package demo

import (
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// labGoroutines returns the stacks of the goroutines running the lab's
// code (servers, link), the calling test's excluded.
func labGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") {
			continue
		}
		if strings.Contains(g, "haul/internal/demo.") || strings.Contains(g, "integration/faultproxy.") {
			out = append(out, g)
		}
	}
	return out
}

// TestLabCloseLeavesNothing: with an SFTP session holding a file open for
// writing and an FTP session waiting for its data connection after EPSV,
// both through the link, Close returns at once, ends every goroutine of
// the lab (it waits for them), and removes the lab's directory. The SSH
// client's known_hosts check uses the lab's file, and a wrong password is
// refused.
func TestLabCloseLeavesNothing(t *testing.T) {
	lab, err := Start(Options{Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			lab.Close()
		}
	}()
	sshAddr := strings.TrimSuffix(strings.TrimPrefix(lab.SFTPURL, "sftp://demo@"), "/")
	ftpAddr := strings.TrimSuffix(strings.TrimPrefix(lab.FTPURL, "ftp://demo@"), "/")

	hostKeys, err := knownhosts.New(lab.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ClientConfig{User: lab.User, Auth: []ssh.AuthMethod{ssh.Password("wrong")},
		HostKeyCallback: hostKeys, Timeout: 10 * time.Second}
	if c, err := ssh.Dial("tcp", sshAddr, cfg); err == nil {
		c.Close()
		t.Fatal("SSH login with a wrong password succeeded")
	}
	cfg.Auth = []ssh.AuthMethod{ssh.Password(lab.Password)}
	sc, err := ssh.Dial("tcp", sshAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	client, err := sftp.NewClient(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	f, err := client.Create("open.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("held open")); err != nil {
		t.Fatal(err)
	}

	fc, err := ftp.Dial(ftpAddr, ftp.DialWithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Quit()
	if err := fc.Login(lab.User, lab.Password); err != nil {
		t.Fatal(err)
	}
	ctl, err := net.Dial("tcp", ftpAddr) // a raw session: EPSV, then nothing
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	_, _ = ctl.Write([]byte("USER demo\r\nPASS " + lab.Password + "\r\nEPSV\r\nRETR sample.bin\r\n"))
	buf := make([]byte, 4096)
	var got string
	for !strings.Contains(got, "229 ") {
		n, err := ctl.Read(buf)
		if err != nil {
			t.Fatalf("raw FTP session: %v after %q", err, got)
		}
		got += string(buf[:n])
	}

	if len(labGoroutines()) == 0 {
		t.Fatal("no goroutine of the lab found before Close: labGoroutines sees nothing")
	}
	start := time.Now()
	closed = true
	if err := lab.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > dataWait/2 {
		t.Errorf("Close took %v: it waited for a timeout", d)
	}
	if gs := labGoroutines(); len(gs) > 0 {
		t.Errorf("%d goroutines of the lab left after Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
	}
	if _, err := os.Stat(lab.Dir); !os.IsNotExist(err) {
		t.Errorf("the lab's directory is still there: %v", err)
	}
}
