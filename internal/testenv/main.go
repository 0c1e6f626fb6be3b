package testenv

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main is a test binary's TestMain: it runs the tests, then cleanups in
// order, and, when every test passed, fails the binary if a goroutine is
// still running that the tests started (go.uber.org/goleak). Servers and
// clients the tests start are stopped by their tests' cleanups, so nothing
// of etcd's, grpc's or memcached's is expected to outlive them; goleak
// ignores no goroutine of theirs.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines left running after the tests passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
