package pool_test

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// TestLeaderKetamaReadByPylibmc: a leader on three servers with ketama
// writes 10,000 keys, and pylibmc configured for weighted ketama finds
// every one. A fourth server is added (topology set): the leader moves the
// keys, and pylibmc over the four servers finds every one, moved keys
// included; written again, every one with its new value.
func TestLeaderKetamaReadByPylibmc(t *testing.T) {
	python := pylibmcPython(t)
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 4)
	const ns = "ketama"
	l := keyspace.MustNew(ns)
	three, four := servers[:3], servers
	first := runNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(three), Distribution: hashring.Ketama})
	keys := make(map[string]string, 10000)
	for i := range 10000 {
		keys[fmt.Sprintf("user:%d", i)] = fmt.Sprintf("v1-%d", i)
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
	res := readWithPylibmc(t, python, three, map[string]any{"ketama_weighted": true}, keys)
	if res.MissingCount != 0 || res.WrongCount != 0 {
		t.Fatalf("pylibmc over 3 servers: %d of %d missing (%q...), %d wrong (%q...)", res.MissingCount, res.Checked, res.Missing, res.WrongCount, res.Wrong)
	}

	// Add a server.
	ctx := testenv.Ctx(t, 60*time.Second)
	next := topology.Topology{Distribution: hashring.Ketama, Servers: four}
	if err := topology.Probe(ctx, next); err != nil {
		t.Fatal(err)
	}
	got, err := topology.Set(ctx, cli, l, next)
	if err != nil || got.Epoch != 2 {
		t.Fatalf("Set: %v, %v", got, err)
	}
	// The leader takes the change: it moves the keys, then writes with the
	// four servers.
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitTopologyApplied(t, c, l, got.Epoch)
	select {
	case err := <-first:
		t.Fatalf("the leader stopped at the change: %v", err)
	default:
	}
	r3, _ := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: three})
	r4, _ := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: four})
	moved := 0
	for k := range keys {
		if r3.Index(k) != r4.Index(k) {
			moved++
		}
	}
	if moved < 1000 {
		t.Fatalf("only %d keys move to the fourth server: the test needs more", moved)
	}
	// Before they are written again, a reader of the new topology finds
	// every key, the moved ones on the fourth server.
	res = readWithPylibmc(t, python, four, map[string]any{"ketama_weighted": true}, keys)
	if res.MissingCount != 0 || res.WrongCount != 0 {
		t.Fatalf("pylibmc over 4 servers after the change: %d missing (%q...), %d wrong; %d keys moved", res.MissingCount, res.Missing, res.WrongCount, moved)
	}
	assertPlaced(t, four, r4)
	again := maps.Clone(keys)
	for k := range again {
		again[k] = "v2-" + k
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, again))
	res = readWithPylibmc(t, python, four, map[string]any{"ketama_weighted": true}, again)
	if res.MissingCount != 0 || res.WrongCount != 0 {
		t.Fatalf("pylibmc over 4 servers: %d of %d missing (%q...), %d wrong (%q...)", res.MissingCount, res.Checked, res.Missing, res.WrongCount, res.Wrong)
	}
}

// TestLeaderModulaReadByGomemcache: a leader on three servers with the
// default distribution writes 10,000 keys and a plain gomemcache client
// over the same servers reads every one.
func TestLeaderModulaReadByGomemcache(t *testing.T) {
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 3)
	const ns = "modula"
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: addrs(servers)})
	keys := make(map[string]string, 10000)
	for i := range 10000 {
		keys[fmt.Sprintf("item/%d", i)] = fmt.Sprintf("m-%d", i)
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
	if bad := readWithGomemcache(t, servers, keys); len(bad) > 0 {
		t.Fatalf("gomemcache misses %d of %d keys: %q...", len(bad), len(keys), bad[:min(10, len(bad))])
	}
}
