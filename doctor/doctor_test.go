package doctor_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openhaul/haul/doctor"
	"github.com/openhaul/haul/transfer"
)

// fakeFTP is a minimal FTP server for one file. With ignoreREST it answers
// REST with 350 and then sends the file from byte 0 anyway: the server bug
// that corrupts every resumed download of a client that trusts the 350.
type fakeFTP struct {
	ln         net.Listener
	content    []byte
	ignoreREST bool
	wg         sync.WaitGroup
}

func newFakeFTP(t *testing.T, ignoreREST bool) *fakeFTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	content := make([]byte, 100_000)
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	f := &fakeFTP{ln: ln, content: content, ignoreREST: ignoreREST}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeFTP) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer c.Close()
			f.session(c)
		}()
	}
}

func (f *fakeFTP) session(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	say := func(format string, a ...any) { fmt.Fprintf(c, format+"\r\n", a...) }
	say("220 fake")
	var dl net.Listener
	defer func() {
		if dl != nil {
			_ = dl.Close()
		}
	}()
	var rest int64
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch strings.ToUpper(verb) {
		case "USER":
			say("331 password")
		case "PASS":
			say("230 in")
		case "FEAT":
			say("211-Features:\r\n REST STREAM\r\n SIZE\r\n EPSV\r\n211 End")
		case "TYPE", "NOOP", "OPTS":
			say("200 ok")
		case "SIZE":
			say("213 %d", len(f.content))
		case "PWD":
			say(`257 "/"`)
		case "REST":
			rest, _ = strconv.ParseInt(arg, 10, 64)
			say("350 Restarting at %d", rest)
		case "EPSV", "PASV":
			if dl != nil {
				_ = dl.Close()
			}
			dl, err = net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				say("425 no")
				continue
			}
			port := dl.Addr().(*net.TCPAddr).Port
			if strings.EqualFold(verb, "EPSV") {
				say("229 Entering Extended Passive Mode (|||%d|)", port)
			} else {
				say("227 Entering Passive Mode (127,0,0,1,%d,%d)", port>>8, port&255)
			}
		case "LIST", "RETR":
			if dl == nil {
				say("425 no data connection")
				continue
			}
			dc, err := dl.Accept()
			_ = dl.Close()
			dl = nil
			if err != nil {
				say("425 no data connection")
				continue
			}
			say("150 here it comes")
			data := []byte("-rw-r--r-- 1 u g 100000 Jan 01 00:00 file.bin\r\n")
			if strings.EqualFold(verb, "RETR") {
				data = f.content
				if !f.ignoreREST {
					data = data[min(rest, int64(len(data))):]
				}
			}
			rest = 0
			_, werr := dc.Write(data)
			_ = dc.Close()
			if werr != nil {
				say("426 aborted")
			} else {
				say("226 done")
			}
		case "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

func runFake(t *testing.T, f *fakeFTP) *doctor.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := doctor.Run(ctx, "ftp://u@"+f.ln.Addr().String()+"/", transfer.Config{Password: "secret-pw"},
		doctor.Options{ReadPath: "file.bin"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "secret-pw") {
		t.Fatal("password in the report")
	}
	t.Logf("report:\n%s", b.String())
	return rep
}

func TestRESTIgnoredIsAFailure(t *testing.T) {
	t.Parallel()
	rep := runFake(t, newFakeFTP(t, true))
	f, ok := rep.Find("resume-read")
	if !ok || f.Status != doctor.Fail || !strings.Contains(f.Summary, "IGNORED") {
		t.Fatalf("resume-read: %+v, want a failure saying REST is ignored", f)
	}
	if !rep.Failed() {
		t.Error("Failed() is false")
	}
}

func TestRESTHonoured(t *testing.T) {
	t.Parallel()
	rep := runFake(t, newFakeFTP(t, false))
	f, ok := rep.Find("resume-read")
	if !ok || f.Status != doctor.OK {
		t.Fatalf("resume-read: %+v, want ok", f)
	}
	if rep.Failed() {
		t.Errorf("a finding failed")
	}
	for _, id := range []string{"login", "binary", "epsv", "pasv", "pasv-address"} {
		if f, ok := rep.Find(id); !ok || f.Status != doctor.OK {
			t.Errorf("%s: %+v", id, f)
		}
	}
}

func TestOptionsBounded(t *testing.T) {
	t.Parallel()
	for _, o := range []doctor.Options{
		{ProbeIdle: doctor.MaxProbeIdle + time.Second},
		{ProbeIdle: time.Second},
		{ProbeLimit: doctor.MaxProbeLimit + 1},
		{ProbeLimit: -1},
		{WriteDir: "a\r\nDELE x"},
	} {
		if _, err := doctor.Run(context.Background(), "ftp://127.0.0.1:1/", transfer.Config{}, o); err == nil {
			t.Errorf("Run(%+v) accepted", o)
		}
	}
}

func TestReportJSON(t *testing.T) {
	t.Parallel()
	rep := runFake(t, newFakeFTP(t, true))
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"ok":false`, `"id":"resume-read"`, `"status":"fail"`, `"duration_ms":`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON lacks %s: %s", want, b.String())
		}
	}
}
