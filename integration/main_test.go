package integration_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/openhaul/haul/integration/testbed"
)

// TestMain runs the tests only when a test bed is available (one line
// saying why not otherwise: testbed.Main), then removes what they built
// outside their own temporary directories (the CLI binary).
func TestMain(m *testing.M) {
	code := testbed.Main(m, "integration")
	if cliPath != "" {
		_ = os.RemoveAll(filepath.Dir(cliPath))
	}
	os.Exit(code)
}
