package resume

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// What a transfer keeps on disk so that a later process, which trusts no
// byte it cannot prove, can resume it: the fingerprint of what the
// destination is being written from, and how far each byte range is known
// to hold the source's bytes. The file is written crash-safe (a fresh
// exclusive temporary file in the same directory, fsync, rename), so it
// holds either the old record or the new one; a record that is missing,
// unreadable or for another source proves nothing and the transfer starts
// from zero (or from what a server-side hash proves).

// stateVersion is written into every state file; a file of another version
// proves nothing.
const stateVersion = 2

// checkpointInterval is how often a running attempt records its progress
// (without fsync: a lost record costs progress only: at most this long of
// transfer after a kill -9); every fullCheckpointEvery-th time (10 s) a
// download first makes its data durable (fsync), and records it as such,
// which is what survives a machine's crash. A process's crash keeps what
// the kernel holds. Each record is a rename, which on ext4 commits the
// journal and with it writes out the data of files being written on the
// same disk (a local server's too): not more often than this.
const (
	checkpointInterval  = 250 * time.Millisecond
	fullCheckpointEvery = 40
)

// segState is one byte range of a transfer and how much of it is at the
// destination: [Start, Start+Done) holds the source's bytes. Sent counts
// the bytes after Done that the last attempt handed to a writer whose
// acknowledgements are only an upper bound (FTP); the next attempt reads
// them back to learn how many landed.
type segState struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Done  int64 `json:"done"`
	Sent  int64 `json:"sent,omitempty"`
	// Written counts, for a download, the bytes after Start that the
	// range wrote to the local file, durable or not. A process that died
	// (kill -9) leaves them in the kernel's page cache, so they count
	// while the kernel that holds them runs: under the record's Boot.
	Written int64 `json:"written,omitempty"`
	// Streaming says that when this was recorded one stream was writing
	// the range from Start+Done, in order, from a start that was proven:
	// then everything the destination holds past that point is the
	// stream's (a download's local file while the same kernel runs, an
	// upload's remote file when its server writes in order).
	Streaming bool `json:"streaming,omitempty"`
}

// proven returns how many bytes after Start the range holds for sure:
// Written too when the machine did not restart since it was recorded.
func (g segState) proven(sameBoot bool) int64 {
	if sameBoot {
		return max(g.Done, min(g.Written, g.End-g.Start))
	}
	return g.Done
}

// sidecar is the state file of a transfer. Path names the destination
// being written (the remote temporary file of an upload) or the remote
// file being read (a download); Size and ModTime fingerprint the source
// (the local file of an upload, the remote file of a download). A single
// stream has one segment, a segmented transfer one per range.
type sidecar struct {
	Version  int        `json:"v"`
	Path     string     `json:"path"`
	Size     int64      `json:"size"`
	ModTime  time.Time  `json:"mtime"`
	Segments []segState `json:"segments"`
	// Boot identifies the kernel that ran when the record was written
	// (Linux's boot_id), so that bytes written but not yet synced are
	// trusted only if that kernel still runs.
	Boot string `json:"boot,omitempty"`
}

// sameBoot reports whether the record was written under the running
// kernel.
func (s *sidecar) sameBoot() bool {
	return s.Boot != "" && s.Boot == bootID()
}

var (
	bootOnce sync.Once
	bootVal  string
)

// bootID returns an identifier of the running kernel, "" where there is
// none (then only synced bytes are ever trusted).
func bootID() string {
	bootOnce.Do(func() {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err == nil {
			bootVal = strings.TrimSpace(string(b))
		}
	})
	return bootVal
}

// loadSidecar reads a state file; a file of another version is an error.
func loadSidecar(path string) (*sidecar, error) {
	if path == "" {
		return nil, os.ErrNotExist
	}
	// A state file is small: a hostile one may not make us read much.
	b, err := ReadRecord(path, 1<<20)
	if err != nil {
		return nil, err
	}
	var s sidecar
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Version != stateVersion || len(s.Segments) == 0 || s.Size < 0 {
		return nil, errors.New("state file of another version")
	}
	for _, g := range s.Segments {
		if g.Start < 0 || g.End < g.Start || g.End > s.Size || g.Done < 0 || g.Done > g.End-g.Start || g.Sent < 0 || g.Written < 0 {
			return nil, errors.New("state file out of range")
		}
	}
	return &s, nil
}

// matches reports whether the record is for path and a source of this size
// and modification time, with n segments (0: any number).
func (s *sidecar) matches(path string, size int64, mtime time.Time, n int) bool {
	return s != nil && s.Path == path && s.Size == size && s.ModTime.Equal(mtime) &&
		(n == 0 || len(s.Segments) == n)
}

// written returns the end of the last byte the record says is written.
func (s *sidecar) written() int64 {
	var end int64
	for _, g := range s.Segments {
		if g.Done > 0 {
			end = max(end, g.Start+g.Done)
		}
	}
	return end
}

// single returns a one-segment record of [0, size) with done bytes proven
// durable and written bytes written.
func single(path string, size int64, mtime time.Time, done, written int64, streaming bool) *sidecar {
	return &sidecar{Version: stateVersion, Path: path, Size: size, ModTime: mtime,
		Segments: []segState{{Start: 0, End: size, Done: done, Written: max(written, done), Streaming: streaming}}}
}

// save writes the state crash-safe: a new exclusive temporary file beside
// path (never a name someone could have planted a link at), fsync, rename.
// Callers make the data durable first, so the state never claims bytes
// that are not on disk.
func (s *sidecar) save(path string) error { return s.write(path, true) }

// note writes the state like save but without fsync: a checkpoint whose
// loss (a power cut) costs only progress, since a record that is lost or
// torn proves nothing and an older one proves less.
func (s *sidecar) note(path string) error { return s.write(path, false) }

func (s *sidecar) write(path string, sync bool) error {
	if path == "" {
		return nil
	}
	s.Version = stateVersion
	s.Boot = bootID()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return WriteRecord(path, b, sync)
}

// removeState deletes a state file: what it recorded proves nothing any
// more (the transfer finished, or its result failed verification).
func removeState(path string) {
	if path == "" {
		return
	}
	_ = os.Remove(path)
	// And the temporary files of writes a killed process left behind
	// (writeFileAtomic's): removing a name never touches what a link
	// there points to.
	dir, base := filepath.Split(path)
	ents, err := os.ReadDir(filepath.Clean(dir + "."))
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, base+".") && strings.HasSuffix(n, ".tmp") && len(n) > len(base)+len(".tmp")+1 {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}

// checkpoints runs fn every checkpointInterval until stop is called, with
// full set every fullCheckpointEvery-th time; stop waits for a running fn
// and returns.
type checkpoints struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func startCheckpoints(fn func(full bool)) *checkpoints {
	c := &checkpoints{stop: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(checkpointInterval)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-c.stop:
				return
			case <-t.C:
				fn(n%fullCheckpointEvery == 0)
			}
		}
	}()
	return c
}

func (c *checkpoints) Stop() {
	close(c.stop)
	c.wg.Wait()
}

// ReadPrivateFile reads a small record file (at most limit bytes) that
// only this user can have written: not through a symbolic link at its last
// component, only a regular file this user owns and no one else may write
// (elsewhere than unix: not through a link). A file that fails those
// checks is an error, so a record planted in a shared directory vouches
// for nothing.
func ReadPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := openNoFollow(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &os.PathError{Op: "read", Path: path, Err: errors.New("record file too large")}
	}
	return b, nil
}
