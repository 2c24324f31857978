package protocol

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"hash/crc32"
)

// knownHashes are the algorithm names of Hasher, strongest first, with
// their local implementations.
var knownHashes = []struct {
	name string
	new  func() hash.Hash
}{
	{"sha256", sha256.New},
	{"sha512", sha512.New},
	{"sha1", sha1.New},
	{"md5", md5.New},
	{"crc32", func() hash.Hash { return crc32.NewIEEE() }},
}

// KnownHashes returns the algorithm names NewHash implements, strongest
// first.
func KnownHashes() []string {
	names := make([]string, len(knownHashes))
	for i, h := range knownHashes {
		names[i] = h.name
	}
	return names
}

// NewHash returns a new local hash for a Hasher algorithm name ("sha256",
// "sha512", "sha1", "md5", "crc32"), or nil for an unknown one.
func NewHash(algorithm string) hash.Hash {
	for _, h := range knownHashes {
		if h.name == algorithm {
			return h.new()
		}
	}
	return nil
}
