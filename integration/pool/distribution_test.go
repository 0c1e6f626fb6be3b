package pool_test

import (
	"fmt"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// startPool starts n memcached servers.
func startPool(t testing.TB, n int) ([]*testenv.Memcached, []hashring.Server) {
	t.Helper()
	var ms []*testenv.Memcached
	var servers []hashring.Server
	for range n {
		m := testenv.StartMemcached(t)
		ms = append(ms, m)
		servers = append(servers, hashring.Server{Addr: m.Addr})
	}
	return ms, servers
}

// writeKeys writes n keys through a memfence Writer over ring, under term,
// and returns them with their values.
func writeKeys(t *testing.T, ring *hashring.Ring, prefix string, n int, term uint32) map[string]string {
	t.Helper()
	w, err := memfence.New(memfence.Config{Selector: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	keys := make(map[string]string, n)
	var writes []memfence.Write
	for i := range n {
		k, v := fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("v%d-%d", term, i)
		keys[k] = v
		writes = append(writes, memfence.Write{Key: k, Value: []byte(v)})
		if len(writes) == 500 || i == n-1 {
			for j, err := range w.WriteAll(t.Context(), nil, term, writes) {
				if err != nil {
					t.Fatalf("write %q: %v", writes[j].Key, err)
				}
			}
			writes = writes[:0]
		}
	}
	return keys
}

// TestKetamaReadByPylibmc writes keys through memfence with the ketama
// ring and reads every one through pylibmc (libmemcached) configured for
// weighted ketama, which asks only the server it computes for a key: a
// key found is a key on the server pylibmc picks.
func TestKetamaReadByPylibmc(t *testing.T) {
	python := pylibmcPython(t)
	_, servers := startPool(t, 4)
	cases := []struct {
		name    string
		servers []hashring.Server
	}{
		{"3 servers", servers[:3]},
		{"4 servers", servers},
		{"weighted", []hashring.Server{{Addr: servers[0].Addr, Weight: 3}, {Addr: servers[1].Addr}, {Addr: servers[2].Addr, Weight: 2}}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: tc.servers})
			if err != nil {
				t.Fatal(err)
			}
			keys := writeKeys(t, ring, fmt.Sprintf("case%d", i), 10000, 1)
			res := readWithPylibmc(t, python, tc.servers, map[string]any{"ketama_weighted": true}, keys)
			if res.MissingCount != 0 || res.WrongCount != 0 {
				t.Fatalf("pylibmc (%v): %d of %d keys missing (%q...), %d wrong (%q...)",
					res.Behaviors, res.MissingCount, res.Checked, res.Missing, res.WrongCount, res.Wrong)
			}
		})
	}
	// pylibmc's {"ketama": True} alone is libmemcached's unweighted
	// continuum with the one-at-a-time hash (100 points per server): it
	// asks other servers for most keys. The reader above finding every key
	// is therefore no accident of asking every server.
	t.Run("ketama without weighted", func(t *testing.T) {
		ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: servers[:3]})
		if err != nil {
			t.Fatal(err)
		}
		keys := writeKeys(t, ring, "unweighted", 1000, 1)
		res := readWithPylibmc(t, python, servers[:3], map[string]any{"ketama": true}, keys)
		if res.MissingCount < len(keys)/4 {
			t.Fatalf("pylibmc (%v) found %d of %d keys: its unweighted ketama is expected to differ", res.Behaviors, len(keys)-res.MissingCount, len(keys))
		}
	})
}

// TestModulaReadByGomemcache writes keys through memfence with the modula
// ring and reads every one with a plain gomemcache client.
func TestModulaReadByGomemcache(t *testing.T) {
	_, servers := startPool(t, 3)
	ring, err := hashring.New(hashring.Config{Distribution: hashring.Modula, Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	keys := writeKeys(t, ring, "modula", 10000, 1)
	if bad := readWithGomemcache(t, servers, keys); len(bad) > 0 {
		t.Fatalf("gomemcache misses %d of %d keys: %q...", len(bad), len(keys), bad[:min(10, len(bad))])
	}
}
