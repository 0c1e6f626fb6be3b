package failover

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// TestFormerLeaderWriteIsFenced covers G5 (one writer, fenced) and G6 (no
// going back) deterministically, in process: node A is stopped inside its
// write path after its leadership check and before its memcached write; its
// election lease is revoked from outside, so node B is elected, replays and
// applies newer values of the same key; then A is let go. A's late write
// must be refused by the term in the item flags (or skipped), B's value must
// stay, and a reader polling memcached throughout must never see the key's
// sequence number or term go back.
//
// The test uses sets only. Deletes leave a known window (see package
// memfence): a deleted key carries no term, so a former leader that passed
// its lease check and then paused before its add can recreate a key that a
// newer leader deleted. That window is bounded by the lease check before
// every write and is not exercised here.
func TestFormerLeaderWriteIsFenced(t *testing.T) {
	const ns, hot = "fence", "hot"
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(ns)

	// A blocks in BeforeWrite the first time it writes hot after armed is
	// set, until release is closed.
	var (
		armMu    sync.Mutex
		armed    bool
		entered  = make(chan applier.Write, 1)
		release  = make(chan struct{})
		released bool
		lateMu   sync.Mutex
		aLate    []applier.Write // A's successful writes after release
	)
	hooksA := applier.Hooks{
		BeforeWrite: func(_ context.Context, w applier.Write) {
			armMu.Lock()
			hit := armed && w.Op.Key == hot
			if hit {
				armed = false
			}
			armMu.Unlock()
			if hit {
				entered <- w
				<-release
			}
		},
		AfterWrite: func(w applier.Write) {
			lateMu.Lock()
			defer lateMu.Unlock()
			if released {
				aLate = append(aLate, w)
			}
		},
	}
	releaseA := func() {
		lateMu.Lock()
		defer lateMu.Unlock()
		if !released {
			released = true
			close(release)
		}
	}
	logA := newLogCapture(testenv.Logger().Handler())
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: layout, NodeID: "A", Memcached: []string{mc.Addr}, Hooks: hooksA, Logger: slog.New(logA)})
	// Registered after StartNode, so it runs before the node is stopped.
	t.Cleanup(releaseA)
	stA := waitLeader(t, cli, layout, "A", 30*time.Second)
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: layout, NodeID: "B", Memcached: []string{mc.Addr}})
	waitCampaigning(t, cli, layout, 30*time.Second, "A", "B")

	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 2*time.Minute)
	caller, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seq := 0
	set := func() client.Token {
		t.Helper()
		seq++
		tok, err := caller.Set(ctx, hot, []byte(seqValue(hot, seq)), 0)
		if err != nil {
			t.Fatalf("set %s: %v", seqValue(hot, seq), err)
		}
		return tok
	}
	wait := func(tok client.Token) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := c.WaitApplied(wctx, tok); err != nil {
			t.Fatalf("token %s not applied: %v", tok, err)
		}
	}
	for range 3 {
		set()
	}
	wait(set())
	r := startReader(t, mc.Addr, []string{hot}, nil)
	r.Sync(10 * time.Second)

	armMu.Lock()
	armed = true
	armMu.Unlock()
	blockedTok := set()
	var blocked applier.Write
	select {
	case blocked = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("A never tried to write the hot key")
	}
	if blocked.Token != blockedTok || blocked.Term != uint32(stA.Term) {
		t.Fatalf("A blocked on %+v, want token %s under term %d", blocked, blockedTok, stA.Term)
	}

	// Take A's leadership away while it sits between its check and its write.
	campA := campaignOf(t, cli, layout, "A")
	if _, err := cli.Revoke(ctx, campA.Lease); err != nil {
		t.Fatalf("revoke A's election lease: %v", err)
	}
	stB := waitLeader(t, cli, layout, "B", 30*time.Second)
	if stB.Term <= stA.Term {
		t.Fatalf("B has term %d, not above A's %d", stB.Term, stA.Term)
	}
	for range 4 {
		set()
	}
	newest := set()
	wait(newest)
	checkHot := func(when string) {
		t.Helper()
		it, err := memcache.New(mc.Addr).Get(hot)
		if err != nil {
			t.Fatalf("%s: memcached %s: %v", when, hot, err)
		}
		if string(it.Value) != seqValue(hot, seq) || memfence.TermOf(it.Flags) != uint32(stB.Term) {
			t.Fatalf("%s: memcached %s = %q term %d, want %q term %d", when, hot, it.Value, memfence.TermOf(it.Flags), seqValue(hot, seq), stB.Term)
		}
	}
	checkHot("B applied")

	// Let A go: its write must not land. A logs "leadership ended" once its
	// write attempt has returned and it has left the leader loop.
	endedBefore := len(logA.Records("leadership ended"))
	releaseA()
	testenv.Eventually(t, 30*time.Second, func() bool {
		return len(logA.Records("leadership ended")) > endedBefore
	}, "A never ended its leadership after being let go")
	lateMu.Lock()
	late := append([]applier.Write(nil), aLate...)
	lateMu.Unlock()
	if len(late) > 0 {
		t.Fatalf("A wrote after losing leadership: %+v", late)
	}
	if fenced := logA.Records("write fenced: a newer leader wrote this key"); len(fenced) > 0 {
		t.Logf("A's late write was fenced: %v", fenced[0].Attrs["err"])
	} else {
		t.Logf("A's late write was skipped")
	}
	r.Sync(10 * time.Second)
	checkHot("after A was let go")

	// B goes on applying.
	wait(set())
	r.Sync(10 * time.Second)
	r.Stop()
	it, err := memcache.New(mc.Addr).Get(hot)
	if err != nil || string(it.Value) != seqValue(hot, seq) {
		t.Fatalf("final memcached %s = %v, %v; want %q", hot, it, err, seqValue(hot, seq))
	}
}
