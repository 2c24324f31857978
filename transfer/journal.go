package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openhaul/haul/resume"
)

// Store keeps the records of batch journals: small values under keys made
// of letters, digits and "-". A FileStore is the default; a fleet of
// workers can implement Store over a database or key-value service it
// already runs, so that any worker's rerun knows what the others did.
// Methods may be called concurrently.
type Store interface {
	// Get returns the value stored under key, or an error matching
	// fs.ErrNotExist when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores value under key, replacing any earlier value
	// atomically: a Get never sees a torn value, even after a crash.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// FileStore is a Store in a local directory: one file per key, each
// replaced atomically (a new file renamed over the old). Values it cannot
// trust (a file planted as a link, one another user owns or may write)
// are reported missing. The directory is made, private, when missing.
type FileStore struct {
	// Dir is the directory.
	Dir string
}

var _ Store = (*FileStore)(nil)

// maxRecord bounds a stored value.
const maxRecord = 64 << 10

func (s *FileStore) name(key string) (string, error) {
	if key == "" || strings.Trim(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return "", fmt.Errorf("transfer: store key %q: want letters, digits and -", key)
	}
	return filepath.Join(s.Dir, key+".json"), nil
}

// Get reads the value of key.
func (s *FileStore) Get(ctx context.Context, key string) ([]byte, error) {
	p, err := s.name(key)
	if err != nil {
		return nil, err
	}
	return resume.ReadPrivateFile(p, maxRecord)
}

// Put writes the value of key atomically (without fsync: a power cut may
// lose the latest records, never tear one).
func (s *FileStore) Put(ctx context.Context, key string, value []byte) error {
	p, err := s.name(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.Dir, ".put-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(value)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// Delete removes key.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	p, err := s.name(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// The states of a journal record.
const (
	statePartial  = "partial"
	stateVerified = "verified"
)

// journalRecord is what a batch's journal knows of one file.
type journalRecord struct {
	V      int    `json:"v"`
	Op     string `json:"op"`
	Remote string `json:"remote"`
	Local  string `json:"local"`
	// State is "partial" (started, not verified: its resume state is the
	// transfer's own state file) or "verified".
	State       string    `json:"state"`
	Size        int64     `json:"size,omitempty"`
	LocalMTime  time.Time `json:"local_mtime,omitzero"`
	RemoteMTime time.Time `json:"remote_mtime,omitzero"`
	Verified    string    `json:"verified,omitempty"`
	At          time.Time `json:"at"`
}

const journalVersion = 1

// journal reads and writes a batch's records in a Store. Its failures
// cost only skips on a later run: they are logged by the caller, never
// fail a transfer.
type journal struct {
	st Store
	ep string // the endpoint, part of every key
}

func (j *journal) key(op string, job Job) string {
	abs, err := filepath.Abs(job.Local)
	if err != nil {
		abs = job.Local
	}
	sum := sha256.Sum256([]byte(j.ep + "\x00" + op + "\x00" + job.Remote + "\x00" + abs))
	return op + "-" + hex.EncodeToString(sum[:16])
}

// get returns the record of job, or nil.
func (j *journal) get(ctx context.Context, op string, job Job) *journalRecord {
	b, err := j.st.Get(ctx, j.key(op, job))
	if err != nil {
		return nil
	}
	var r journalRecord
	if json.Unmarshal(b, &r) != nil || r.V != journalVersion || r.Op != op || r.Remote != job.Remote {
		return nil
	}
	return &r
}

func (j *journal) put(ctx context.Context, r *journalRecord) {
	r.V, r.At = journalVersion, time.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	_ = j.st.Put(ctx, j.key(r.Op, Job{Local: r.Local, Remote: r.Remote}), b)
}
