// Package failover tests what happens to accepted operations when the
// leader node dies, pauses, loses its lease or stops, and when a caller's
// incarnation is superseded or expires: the guarantees G1-G6 of
// docs/guarantees.md. Every test runs against a real embedded etcd started in
// the test process and a real memcached process; the process tests run the
// real `coordinator serve` binary.
package failover

import (
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup) }
