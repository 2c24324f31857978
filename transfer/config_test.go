package transfer_test

import (
	"strings"
	"testing"

	"github.com/openhaul/haul/transfer"
)

// AcceptNewHostKey records new keys, InsecureIgnoreHostKey checks none:
// together they are refused by Open, before any connection.
func TestOpenAcceptNewHostKeyContradictsInsecure(t *testing.T) {
	_, err := transfer.Open("sftp://u@127.0.0.1:1", transfer.Config{Password: "x",
		AcceptNewHostKey: true, InsecureIgnoreHostKey: true})
	if err == nil || !strings.Contains(err.Error(), "contradict") {
		t.Fatalf("err = %v, want a contradiction", err)
	}
	if _, err := transfer.Open("sftp://u@127.0.0.1:1", transfer.Config{Password: "x", AcceptNewHostKey: true}); err != nil {
		t.Fatalf("AcceptNewHostKey alone: %v", err)
	}
}
