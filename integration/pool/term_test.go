package pool_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// TestTermLimitAndReset is the procedure for a namespace whose terms run
// out, with the limit lowered to 3 (node.Config.MaxTerm) so that it is
// reached in a few leaderships. A node that wins term 4 refuses to lead
// and Run returns ErrTermExhausted; operations accepted meanwhile stay
// pending. With every node stopped, topology.ResetTerm (refused while an
// election key exists) re-stamps every item with term 0, keeping values
// and lifetimes, sets restore's records to term 0 and deletes the term
// key; the next node leads under term 1, applies what was pending without
// a fenced write, and restores a restarted server's keys from the records.
func TestTermLimitAndReset(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ms, servers := startPool(t, 3)
	const ns = "term-limit"
	l := keyspace.MustNew(ns)
	cfg := func(id string) node.Config {
		return node.Config{
			Etcd: cli, Layout: l, NodeID: id, Memcached: addrs(servers), Distribution: hashring.Ketama,
			RestoreOnRestart: true, MaxTerm: 3, RestartCheckInterval: 20 * time.Millisecond,
		}
	}
	ctx := testenv.Ctx(t, 120*time.Second)
	keys := map[string]string{}
	for term := 1; term <= 3; term++ {
		for i := range 100 {
			keys[fmt.Sprintf("t-%d", i+100*(term-1))] = fmt.Sprintf("term-%d", term)
		}
		n := testenv.StartNode(t, cfg(fmt.Sprintf("n%d", term)))
		waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
		n.Stop(t)
		if got := leaderTermOf(t, cli, ns); got != uint32(term) {
			t.Fatalf("term %d, want %d", got, term)
		}
	}
	ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	mc := memcache.NewFromSelector(ring)
	t.Cleanup(func() { mc.Close() })
	exp := time.Now().Add(time.Hour).Unix()
	if err := mc.Set(&memcache.Item{Key: "expiring", Value: []byte("e"), Flags: memfence.Flags(3), Expiration: int32(exp)}); err != nil {
		t.Fatal(err)
	}

	// Term 4 is beyond the limit: the node refuses to lead.
	select {
	case err := <-runNode(t, cfg("n4")):
		if !errors.Is(err, memfence.ErrTermExhausted) {
			t.Fatalf("the node of term 4 returned %v, want ErrTermExhausted", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node of term 4 did not refuse within 30s")
	}
	last := map[string]string{}
	for k := range keys {
		last[k] = "after-reset"
	}
	pending := submitKeys(t, cli, ns, last)

	// Refused while a node campaigns (an election key exists).
	if _, err := cli.Put(ctx, l.Election()+"/someone", "{}"); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.ResetTerm(ctx, topology.ResetTermConfig{Etcd: cli, Layout: l}); !errors.Is(err, topology.ErrNodesRunning) {
		t.Fatalf("ResetTerm with a node campaigning: %v, want ErrNodesRunning", err)
	}
	if _, err := cli.Delete(ctx, l.Election()+"/someone"); err != nil {
		t.Fatal(err)
	}
	res, err := topology.ResetTerm(ctx, topology.ResetTermConfig{Etcd: cli, Layout: l, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Term != 4 || res.Keys != len(keys)+1 || res.Restamped != len(keys)+1 || res.Records != len(keys) || len(res.ListingShort) != 0 {
		t.Fatalf("ResetTerm: %+v; want term 4, %d keys and items, %d records", res, len(keys)+1, len(keys))
	}
	for k, v := range keys {
		if it, err := mc.Get(k); err != nil || string(it.Value) != v || it.Flags != 0 {
			t.Fatalf("%s after the reset: %+v, %v; want %q with flags 0", k, it, err, v)
		}
	}
	w, err := memfence.New(memfence.Config{Selector: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if it, err := w.Get(ctx, "expiring"); err != nil || it.Flags != 0 || it.Exptime < exp-2 || it.Exptime > exp+2 {
		t.Fatalf("expiring after the reset: %+v, %v; want flags 0 and exptime about %d", it, err, exp)
	}
	resp, err := cli.Get(ctx, l.MemcachedValuesPrefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var r restore.Record
		if err := json.Unmarshal(kv.Value, &r); err != nil || r.Term != 0 {
			t.Fatalf("record %s after the reset: %s, %v", kv.Key, kv.Value, err)
		}
	}

	// The next node leads under term 1 and applies what was pending.
	n := testenv.StartNode(t, cfg("n5"))
	waitApplied(t, cli, ns, pending)
	if got := leaderTermOf(t, cli, ns); got != 1 {
		t.Fatalf("term after the reset %d, want 1", got)
	}
	for k := range keys {
		if it, err := mc.Get(k); err != nil || string(it.Value) != "after-reset" || it.Flags != memfence.Flags(1) {
			t.Fatalf("%s after the reset and the pending writes: %+v, %v", k, it, err)
		}
	}
	if f := n.Stats.Fenced.Load(); f != 0 {
		t.Fatalf("%d writes fenced after the reset", f)
	}
	// A restarted server's keys come back from the records, of term 1.
	restarted := ms[0]
	restarted.Stop()
	restarted.Start()
	testenv.Eventually(t, 30*time.Second, func() bool {
		for k := range keys {
			if it, err := mc.Get(k); err != nil || string(it.Value) != "after-reset" || it.Flags != memfence.Flags(1) {
				return false
			}
		}
		return true
	}, "the keys of %s did not come back", restarted.Addr)
}
