package topology_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

func topo(d hashring.Distribution, addrs ...string) topology.Topology {
	t := topology.Topology{Distribution: d}
	for _, a := range addrs {
		s, err := hashring.ParseServer(a)
		if err != nil {
			panic(err)
		}
		t.Servers = append(t.Servers, s)
	}
	return t
}

func TestEnsureCreatesOnceAndRefusesOthers(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("pool")
	ctx := testenv.Ctx(t, 30*time.Second)
	if _, err := topology.Get(ctx, cli, l); !errors.Is(err, topology.ErrNotFound) {
		t.Fatalf("Get on an empty namespace: %v", err)
	}
	// Nodes starting at once: exactly one creates, the others agree.
	want := topo(hashring.Ketama, "10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211=2")
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { _, errs[i] = topology.Ensure(ctx, cli, l, want) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := topology.Get(ctx, cli, l)
	if err != nil || got.Epoch != 1 || got.Diff(want) != "" {
		t.Fatalf("stored %v, %v; want %v epoch 1", got, err, want)
	}
	resp, err := cli.Get(ctx, l.Topology())
	if err != nil || resp.Kvs[0].Version != 1 {
		t.Fatalf("topology key written %d times (%v), want once", resp.Kvs[0].Version, err)
	}
	cases := []struct {
		name   string
		local  topology.Topology
		reason string
	}{
		{"another order", topo(hashring.Ketama, "10.0.0.2:11211", "10.0.0.1:11211", "10.0.0.3:11211=2"), "another order"},
		{"one more", topo(hashring.Ketama, "10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211=2", "10.0.0.4:11211"), "4 servers, not 3"},
		{"weight", topo(hashring.Ketama, "10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"), "server 3"},
		{"distribution", topo(hashring.Modula, "10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"), "distribution modula, not ketama"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stored, err := topology.Ensure(ctx, cli, l, tc.local)
			var me *topology.MismatchError
			if !errors.Is(err, topology.ErrMismatch) || !errors.As(err, &me) {
				t.Fatalf("Ensure: %v, want ErrMismatch", err)
			}
			if !strings.Contains(me.Reason, tc.reason) || !strings.Contains(err.Error(), "topology set") {
				t.Fatalf("reason %q (error %q), want it to say %q", me.Reason, err, tc.reason)
			}
			if stored.Diff(want) != "" {
				t.Fatalf("Ensure returned %v as stored", stored)
			}
		})
	}
	if got, _ := topology.Get(ctx, cli, l); got.Diff(want) != "" || got.Epoch != 1 {
		t.Fatalf("a refused Ensure changed the topology to %v", got)
	}
	// Weight 1 and no weight are the same.
	if _, err := topology.Ensure(ctx, cli, l, topo(hashring.Ketama, "10.0.0.1:11211=1", "10.0.0.2:11211", "10.0.0.3:11211=2")); err != nil {
		t.Fatal(err)
	}
}

func TestSetBumpsEpoch(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("pool")
	ctx := testenv.Ctx(t, 30*time.Second)
	a := topo(hashring.Modula, "10.0.0.1:11211")
	got, err := topology.Set(ctx, cli, l, a)
	if err != nil || got.Epoch != 1 {
		t.Fatalf("Set on an empty namespace: %v, %v", got, err)
	}
	b := topo(hashring.Ketama, "10.0.0.1:11211", "10.0.0.2:11211")
	if got, err = topology.Set(ctx, cli, l, b); err != nil || got.Epoch != 2 || got.Diff(b) != "" {
		t.Fatalf("second Set: %v, %v", got, err)
	}
	if got, err = topology.Get(ctx, cli, l); err != nil || got.Epoch != 2 || got.Diff(b) != "" {
		t.Fatalf("Get after Set: %v, %v", got, err)
	}
	// Bad input writes nothing.
	_, err = topology.Set(ctx, cli, l, topo(hashring.Modula, "10.0.0.1:11211", "10.0.0.1:11211"))
	if !errors.Is(err, config.ErrBadConfig) {
		t.Fatalf("Set of a server listed twice: %v", err)
	}
	if got, _ := topology.Get(ctx, cli, l); got.Epoch != 2 {
		t.Fatalf("a refused Set changed the epoch to %d", got.Epoch)
	}
	if _, err := cli.Put(ctx, l.Topology(), "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Get(ctx, cli, l); !errors.Is(err, topology.ErrCorrupt) {
		t.Fatalf("Get of a corrupt value: %v", err)
	}
}

func TestProbe(t *testing.T) {
	m := testenv.StartMemcached(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	if err := topology.Probe(ctx, topo(hashring.Modula, m.Addr)); err != nil {
		t.Fatal(err)
	}
	dead := testenv.StartMemcached(t)
	dead.Stop()
	err := topology.Probe(ctx, topo(hashring.Modula, m.Addr, dead.Addr))
	if !errors.Is(err, topology.ErrUnreachable) || !strings.Contains(err.Error(), dead.Addr) || strings.Contains(err.Error(), m.Addr) {
		t.Fatalf("Probe with a stopped server: %v", err)
	}
}

func TestString(t *testing.T) {
	tp := topo(hashring.Ketama, "a:1", "b:2=3")
	if got := tp.String(); got != "ketama a:1,b:2=3" {
		t.Fatalf("String() = %q", got)
	}
	tp.Epoch = 4
	if got := tp.String(); got != "ketama a:1,b:2=3 (epoch 4)" {
		t.Fatalf("String() = %q", got)
	}
	me := &topology.MismatchError{Local: topo(hashring.Ketama, "b:2", "a:1"), Stored: topo(hashring.Ketama, "a:1", "b:2")}
	me.Stored.Epoch, me.Reason = 1, me.Local.Diff(me.Stored)
	t.Log(me)
}
