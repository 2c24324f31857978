package resume

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
)

// recordMagic begins every record file WriteRecord writes: the magic, the
// hex SHA-256 of the value and a newline, then the value.
const recordMagic = "haul-record-1 "

// errTornRecord reports a record file whose value does not match its
// checksum: a write in place was cut short (a crash, a full disk).
var errTornRecord = errors.New("record file does not match its checksum (a write was cut short)")

// WriteRecord stores value in the record file at path, with a checksum
// that ReadRecord verifies, and fsyncs it when sync is set.
//
// Where it can, it overwrites the file in place (its own regular file,
// one link, nobody else may write it, opened without following a link or
// blocking on a fifo): creating and renaming a temporary file per record
// costs ext4 an inode allocation that grows slow with the deleted inodes
// such churn leaves (a quarter of a 300-file batch's CPU was spent there).
// A write cut short leaves a mix of the old and the new record, which the
// checksum refuses: it proves nothing, as a lost record would. Any other
// file at path (a link, a fifo, another user's) is replaced atomically by
// a temporary file renamed over it, never written through.
func WriteRecord(path string, value []byte, sync bool) error {
	sum := sha256.Sum256(value)
	b := make([]byte, 0, len(recordMagic)+hex.EncodedLen(len(sum))+1+len(value))
	b = append(b, recordMagic...)
	b = hex.AppendEncode(b, sum[:])
	b = append(b, '\n')
	b = append(b, value...)
	if f := openOwnRecord(path); f != nil {
		_, err := f.WriteAt(b, 0)
		if err == nil {
			err = f.Truncate(int64(len(b)))
		}
		if err == nil && sync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return writeFileAtomic(path, b, sync)
}

// ReadRecord reads a record file of at most limit bytes of value that only
// this user can have written (ReadPrivateFile) and returns its value once
// its checksum matches. A file of the format before checksums, a JSON
// object written atomically, is returned as it is.
func ReadRecord(path string, limit int64) ([]byte, error) {
	b, err := ReadPrivateFile(path, limit+int64(len(recordMagic))+2*sha256.Size+1)
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && b[0] == '{' {
		return b, nil
	}
	rest, ok := bytes.CutPrefix(b, []byte(recordMagic))
	hexSum, value, ok2 := bytes.Cut(rest, []byte{'\n'})
	var want [sha256.Size]byte
	if !ok || !ok2 || hex.EncodedLen(len(want)) != len(hexSum) {
		return nil, &os.PathError{Op: "read", Path: path, Err: errTornRecord}
	}
	if _, err := hex.Decode(want[:], hexSum); err != nil || sha256.Sum256(value) != want {
		return nil, &os.PathError{Op: "read", Path: path, Err: errTornRecord}
	}
	return value, nil
}

// writeFileAtomic replaces path with b through a fresh temporary file,
// synced first when sync is set.
func writeFileAtomic(path string, b []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// OpenPrivateFile opens a file for reading as ReadPrivateFile does: not
// through a symbolic link, and only a regular file this user owns and no
// one else may write (elsewhere than unix: not through a link).
func OpenPrivateFile(path string) (*os.File, error) { return openNoFollow(path) }

// OpenPrivateAppend opens the file at path for appending, creating it
// (private) when missing. A file there that is not this user's own regular
// file with one link, that others may write, or a link, is first replaced
// by an empty file, atomically: never written through.
func OpenPrivateAppend(path string) (*os.File, error) {
	if f := openOwn(path, os.O_APPEND); f != nil {
		return f, nil
	}
	if err := writeFileAtomic(path, nil, false); err != nil {
		return nil, err
	}
	if f := openOwn(path, os.O_APPEND); f != nil {
		return f, nil
	}
	return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a private regular file")}
}
