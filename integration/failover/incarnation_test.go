package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// writeLog records the applier's successful writes in the order they were
// made.
type writeLog struct {
	mu     sync.Mutex
	writes []applier.Write
}

func (l *writeLog) add(w applier.Write) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, w)
}

func (l *writeLog) all() []applier.Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]applier.Write(nil), l.writes...)
}

// TestIncarnationsAcrossMemcachedOutage covers G2 (order) and G4 (the old
// go first) across incarnations, and G1 (fenced callers) for both refusals.
// With memcached down, incarnation A of "svc" submits sets to k0..k9 (and to
// a key only A writes); incarnation B of the same name supersedes A and
// submits to the same keys; A's later submissions are refused with
// ErrSuperseded. When memcached is back, every accepted operation of A is
// applied before any of B's, the writes go in strictly increasing token
// order, and the final values are B's (and A's on A's own key). Separately,
// an incarnation whose lease was revoked gets ErrExpired. Nothing of a
// refused submission reaches etcd's pending batches or memcached.
func TestIncarnationsAcrossMemcachedOutage(t *testing.T) {
	const ns, rounds = "incarn", 5
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(ns)
	var log writeLog
	stats := &applier.Stats{}
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: layout, NodeID: "n1", Memcached: []string{mc.Addr}, Stats: stats,
		Hooks: applier.Hooks{AfterWrite: log.add},
	})
	waitLeader(t, cli, layout, "n1", 30*time.Second)

	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 2*time.Minute)
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}

	mc.Stop()

	a, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var aToks []client.Token
	for r := range rounds {
		for _, k := range keys {
			tok, err := a.Set(ctx, k, []byte(fmt.Sprintf("A:%s:%d", k, r)), 0)
			if err != nil {
				t.Fatalf("A set %s: %v", k, err)
			}
			aToks = append(aToks, tok)
		}
		tok, err := a.Set(ctx, "a-only", []byte(fmt.Sprintf("A:a-only:%d", r)), 0)
		if err != nil {
			t.Fatalf("A set a-only: %v", err)
		}
		aToks = append(aToks, tok)
	}

	b, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Incarnation() <= a.Incarnation() {
		t.Fatalf("B's incarnation %d is not above A's %d", b.Incarnation(), a.Incarnation())
	}
	// G4's premise: A is superseded before any of its operations was applied.
	if wm, _, err := tokenseq.Watermark(ctx, cli, layout); err != nil || !wm.Less(aToks[0]) {
		t.Fatalf("watermark %s (err %v) already covers A's first token %s while memcached is down", wm, err, aToks[0])
	}
	var bLast client.Token
	for r := range rounds {
		for _, k := range keys {
			tok, err := b.Set(ctx, k, []byte(fmt.Sprintf("B:%s:%d", k, r)), 0)
			if err != nil {
				t.Fatalf("B set %s: %v", k, err)
			}
			bLast = tok
		}
	}

	// A is superseded: every later submission is refused, for its own key
	// and for the shared ones (where it would otherwise be the last word).
	for _, k := range append([]string{"a-late"}, keys...) {
		_, err := a.Set(ctx, k, []byte("A:late"), 0)
		if !errors.Is(err, client.ErrSuperseded) || errors.Is(err, client.ErrExpired) {
			t.Fatalf("superseded A: Set %s returned %v, want ErrSuperseded", k, err)
		}
	}
	// G1, expiry: an incarnation whose lease was revoked is refused with
	// ErrExpired.
	e, err := c.Register(ctx, "exp", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg, ok, err := registry.New(c.Etcd(), c.Layout()).Get(ctx, "exp")
	if err != nil || !ok || reg.Incarnation != e.Incarnation() {
		t.Fatalf("registration of exp: %+v, %v, %v (want incarnation %d)", reg, ok, err, e.Incarnation())
	}
	if _, err := cli.Revoke(ctx, reg.LeaseID); err != nil {
		t.Fatalf("revoke exp's lease: %v", err)
	}
	for _, k := range []string{"exp-k", keys[0]} {
		_, err := e.Set(ctx, k, []byte("E:late"), 0)
		if !errors.Is(err, client.ErrExpired) || errors.Is(err, client.ErrSuperseded) {
			t.Fatalf("expired incarnation: Set %s returned %v, want ErrExpired", k, err)
		}
	}
	// Refused submissions stored nothing: the pending batches are exactly
	// A's and B's accepted ones.
	pend, err := cli.Get(ctx, layout.OpsPrefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if want := len(aToks) + rounds*len(keys); len(pend.Kvs) != want {
		t.Errorf("%d batches pending while memcached is down, want %d (A's and B's)", len(pend.Kvs), want)
	}
	for _, kv := range pend.Kvs {
		if strings.Contains(string(kv.Value), ":late") || strings.Contains(string(kv.Key), "/exp/") {
			t.Errorf("a refused submission is pending: %s = %q", kv.Key, kv.Value)
		}
	}

	mc.Start()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.WaitApplied(wctx, bLast); err != nil {
		t.Fatalf("B's last token %s not applied after memcached came back: %v", bLast, err)
	}

	writes := log.all()
	lastA, firstB := -1, -1
	for i, w := range writes {
		if i > 0 && !writes[i-1].Token.Less(w.Token) {
			t.Errorf("write %d (token %s, %s) is not after write %d (token %s, %s)", i, w.Token, w.Op.Key, i-1, writes[i-1].Token, writes[i-1].Op.Key)
		}
		switch {
		case w.Name != "svc" || strings.Contains(string(w.Op.Value), ":late"):
			t.Errorf("a refused submission was applied: %+v", w)
		case w.Incarnation == a.Incarnation():
			lastA = i
		case w.Incarnation == b.Incarnation():
			if firstB < 0 {
				firstB = i
			}
		default:
			t.Errorf("write of an unknown incarnation: %+v", w)
		}
	}
	if lastA < 0 || firstB < 0 {
		t.Fatalf("expected writes of both incarnations, got %d writes (last of A %d, first of B %d)", len(writes), lastA, firstB)
	}
	if lastA > firstB {
		t.Errorf("A's write %d (%+v) came after B's write %d (%+v)", lastA, writes[lastA], firstB, writes[firstB])
	}
	t.Logf("%d writes (%d skipped as overwritten in the same run); A's last at %d, B's first at %d; %d failed attempts while memcached was down",
		len(writes), stats.Skipped.Load(), lastA, firstB, stats.Retries.Load())

	m := memcache.New(mc.Addr)
	want := map[string]string{"a-only": fmt.Sprintf("A:a-only:%d", rounds-1)}
	for _, k := range keys {
		want[k] = fmt.Sprintf("B:%s:%d", k, rounds-1)
	}
	for k, v := range want {
		it, err := m.Get(k)
		if err != nil || string(it.Value) != v {
			t.Errorf("memcached %s = %v, %v; want %q", k, it, err, v)
		}
	}
	for _, k := range []string{"a-late", "exp-k"} {
		if it, err := m.Get(k); !errors.Is(err, memcache.ErrCacheMiss) {
			t.Errorf("refused submission landed: memcached %s = %v, %v", k, it, err)
		}
	}
	wm, _, err := tokenseq.Watermark(ctx, cli, layout)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range aToks {
		if wm.Less(tok) {
			t.Errorf("A's token %s is above the watermark %s", tok, wm)
		}
	}
}
