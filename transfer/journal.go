package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// FileStore is a Store in a local directory: an append-only log file,
// "records.log", holding a line per Put or Delete with a checksum. Get
// reads the log once (an index of offsets, not the values, is kept) and
// sees the Puts and Deletes of this FileStore since; those of other
// processes sharing the directory show after a new FileStore reads it
// again. A line cut short by a crash fails its checksum and is ignored: a
// power cut may lose the latest records, never tear one. A log it cannot
// trust (a link, a file another user owns or may write) is replaced by an
// empty one, never read or written through. The log is compacted when
// read, once most of its lines are superseded. The directory is made,
// private, when missing. Use a FileStore through a pointer.
type FileStore struct {
	// Dir is the directory.
	Dir string

	mu    sync.Mutex
	index map[string]logPos // key -> its latest line; nil until read
}

var _ Store = (*FileStore)(nil)

// logPos is where a line is in the log: its offset and length (newline
// excluded).
type logPos struct {
	off int64
	n   int
}

// maxRecord bounds a stored value.
const maxRecord = 64 << 10

// logName is the log's name in FileStore.Dir.
const logName = "records.log"

// maxLine bounds a log line: the key, the base64 of a value of maxRecord
// bytes, the checksum, separators.
const maxLine = 64 + (maxRecord+2)/3*4 + 64

func checkKey(key string) error {
	if key == "" || len(key) > 64 || strings.Trim(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return fmt.Errorf("transfer: store key %q: want letters, digits and -", key)
	}
	return nil
}

// logLine returns the line of key's value, or of its deletion (value nil):
// "key base64 sum" or "key - sum", sum the first 16 bytes of the SHA-256
// of what precedes it, in hex. It begins with a newline, which ends a line
// an earlier crash cut short.
func logLine(key string, value []byte) []byte {
	b := []byte("\n" + key + " ")
	if value == nil {
		b = append(b, '-')
	} else {
		b = base64.StdEncoding.AppendEncode(b, value)
	}
	sum := sha256.Sum256(b[1:])
	b = append(b, ' ')
	b = hex.AppendEncode(b, sum[:16])
	return append(b, '\n')
}

// parseLine checks a log line (without its newline) and returns its key
// and its value (nil for a deletion); ok is false for a line that is cut
// short or otherwise wrong.
func parseLine(line []byte) (key string, value []byte, ok bool) {
	i := bytes.LastIndexByte(line, ' ')
	if i < 0 || len(line)-i-1 != 32 {
		return "", nil, false
	}
	var want [16]byte
	if _, err := hex.Decode(want[:], line[i+1:]); err != nil {
		return "", nil, false
	}
	if sum := sha256.Sum256(line[:i]); !bytes.Equal(sum[:16], want[:]) {
		return "", nil, false
	}
	k, v, found := bytes.Cut(line[:i], []byte{' '})
	if !found || checkKey(string(k)) != nil {
		return "", nil, false
	}
	if string(v) == "-" {
		return string(k), nil, true
	}
	value, err := base64.StdEncoding.AppendDecode(make([]byte, 0, len(v)*3/4), v)
	if err != nil || len(value) > maxRecord {
		return "", nil, false
	}
	return string(k), value, true
}

// load reads the log into s.index once, compacting it when most of its
// lines are superseded. s.mu must be held.
func (s *FileStore) load() {
	if s.index != nil {
		return
	}
	s.index = make(map[string]logPos)
	p := filepath.Join(s.Dir, logName)
	f, err := resume.OpenPrivateFile(p)
	if err != nil {
		return
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, maxLine+2)
	var off int64
	lines := 0
	for {
		line, err := r.ReadSlice('\n')
		n := int64(len(line))
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any line Put writes: skipped to its end.
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				n += int64(len(line))
			}
			line = nil
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if k, v, ok := parseLine(line[:len(line)-1]); ok {
				lines++
				if v == nil {
					delete(s.index, k)
				} else {
					s.index[k] = logPos{off, len(line) - 1}
				}
			}
		}
		off += n
		if err != nil {
			break
		}
	}
	if lines > 2*len(s.index)+1024 {
		s.compact(f)
	}
}

// compact rewrites the log with its live lines only, through a temporary
// file renamed over it. A Put another process makes meanwhile may be lost:
// it costs a skip, never a wrong one. s.mu must be held.
func (s *FileStore) compact(old *os.File) {
	tmp, err := os.CreateTemp(s.Dir, ".records-*")
	if err != nil {
		return
	}
	keys := slices.Sorted(maps.Keys(s.index))
	index := make(map[string]logPos, len(keys))
	w := bufio.NewWriter(tmp)
	var off int64
	for _, k := range keys {
		v, err := readLine(old, s.index[k], k)
		if err != nil {
			continue
		}
		line := logLine(k, v)
		if _, err := w.Write(line); err != nil {
			break
		}
		index[k] = logPos{off + 1, len(line) - 2}
		off += int64(len(line))
	}
	err = errors.Join(w.Flush(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(s.Dir, logName))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return
	}
	s.index = index
}

// readLine returns the value of key from its line at pos of the log f.
func readLine(f *os.File, pos logPos, key string) ([]byte, error) {
	if pos.n < 0 || pos.n > maxLine {
		return nil, fmt.Errorf("transfer: store %s: the record of %s is %d bytes: %w", f.Name(), key, pos.n, fs.ErrNotExist)
	}
	line := make([]byte, pos.n)
	if _, err := f.ReadAt(line, pos.off); err != nil {
		return nil, err
	}
	k, v, ok := parseLine(line)
	if !ok || k != key || v == nil {
		return nil, fmt.Errorf("transfer: store %s: the record of %s changed under this process: %w", f.Name(), key, fs.ErrNotExist)
	}
	return v, nil
}

// Get reads the value of key.
func (s *FileStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.load()
	pos, ok := s.index[key]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("transfer: store: no record %s: %w", key, fs.ErrNotExist)
	}
	f, err := resume.OpenPrivateFile(filepath.Join(s.Dir, logName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLine(f, pos, key)
}

// Put appends the value of key to the log (without fsync).
func (s *FileStore) Put(ctx context.Context, key string, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > maxRecord {
		return fmt.Errorf("transfer: store key %s: a value of %d bytes, more than %d", key, len(value), maxRecord)
	}
	if value == nil {
		value = []byte{}
	}
	return s.append(key, value)
}

// Delete removes key.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return s.append(key, nil)
}

// append writes the line of key's value (nil: its deletion) at the end of
// the log, and notes it in the index once that is read.
func (s *FileStore) append(key string, value []byte) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	line := logLine(key, value)
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := resume.OpenPrivateAppend(filepath.Join(s.Dir, logName))
	if err != nil {
		return err
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.Write(line)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if s.index != nil {
		if value == nil {
			delete(s.index, key)
		} else {
			s.index[key] = logPos{end + 1, len(line) - 2}
		}
	}
	return nil
}

// stateVerified is the state of a journal record: only verified files are
// recorded (a partial one's resume state is its transfer's state file).
const stateVerified = "verified"

// journalRecord is what a batch's journal knows of one file.
type journalRecord struct {
	V      int    `json:"v"`
	Op     string `json:"op"`
	Remote string `json:"remote"`
	Local  string `json:"local"`
	// State is "verified"; a record in any other state is ignored.
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
