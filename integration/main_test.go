package integration_test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes what the tests built outside their own temporary
// directories (the CLI binary) once they are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if cliPath != "" {
		_ = os.RemoveAll(filepath.Dir(cliPath))
	}
	os.Exit(code)
}
