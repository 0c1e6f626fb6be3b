// Package observability tests what `coordinator serve --http-listen`
// serves, on in-process nodes with monitors on free loopback ports, against
// a real embedded etcd and a real memcached: /metrics tells the leader from
// the standby and counts applied operations and fenced writes, /readyz
// follows memcached's reachability, and /debug/pprof/ is served only when
// enabled.
package observability

import (
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
