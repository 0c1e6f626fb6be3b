package metrics_test

import (
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/metrics"
)

// coordinator_term_headroom is what is left of the 16 bits of the term
// (all of it before the node leads); the topology counters read the
// memcached stats.
func TestTermHeadroomAndTopologyCounters(t *testing.T) {
	ms := &memfence.Stats{}
	ms.MovedKeys.Add(51)
	ms.UnmovedKeys.Add(2)
	m, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: ms})
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, m)
	for name, want := range map[string]float64{
		"coordinator_term_headroom":               memfence.MaxTerm,
		"coordinator_topology_moved_keys_total":   51,
		"coordinator_topology_unmoved_keys_total": 2,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}
