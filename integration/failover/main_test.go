// Package failover tests what happens to accepted operations when the
// leader node dies, pauses, loses its lease or stops, and when a caller's
// incarnation is superseded or expires: the guarantees G1-G6 of
// shared/CONTRACT.md. Every test runs against a real embedded etcd started in
// the test process and a real memcached process; the process tests run the
// real `coordinator serve` binary.
package failover

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
