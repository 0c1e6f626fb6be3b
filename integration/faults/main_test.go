package faults

import (
	"os"
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}
