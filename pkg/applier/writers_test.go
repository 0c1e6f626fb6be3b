package applier_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// writeOrder checks, as the applier's hooks report writes, that each name's
// writes come in strictly increasing (token, index) order and, when global is
// set, that no write comes after one of a later token (batches stored by one
// transaction may share a revision, so writes of different batches with
// equal tokens are not compared).
type writeOrder struct {
	t      *testing.T
	global bool
	mu     sync.Mutex
	last   map[string]applier.Write
	lastAt applier.Write
	count  map[string]int
	any    bool
}

func newWriteOrder(t *testing.T, global bool) *writeOrder {
	return &writeOrder{t: t, global: global, last: map[string]applier.Write{}, count: map[string]int{}}
}

// writtenBefore orders writes by token, then by index in the batch.
func writtenBefore(a, b applier.Write) bool {
	return a.Token.Less(b.Token) || (a.Token == b.Token && a.Index < b.Index)
}

func (o *writeOrder) afterWrite(w applier.Write) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.last[w.Name]; ok && !writtenBefore(prev, w) {
		o.t.Errorf("name %s: write %s/%d (%s) came after %s/%d (%s)", w.Name, w.Token, w.Index, w.Op.Key, prev.Token, prev.Index, prev.Op.Key)
	}
	sameBatch := o.lastAt.Token == w.Token && o.lastAt.Name == w.Name && o.lastAt.Incarnation == w.Incarnation
	if o.global && o.any && (w.Token.Less(o.lastAt.Token) || sameBatch && w.Index <= o.lastAt.Index) {
		o.t.Errorf("one writer: write %s/%d of %s came after %s/%d of %s", w.Token, w.Index, w.Name, o.lastAt.Token, o.lastAt.Index, o.lastAt.Name)
	}
	o.last[w.Name], o.lastAt, o.any = w, w, true
	o.count[w.Name]++
}

func (o *writeOrder) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := make(map[string]int, len(o.count))
	for k, v := range o.count {
		c[k] = v
	}
	return c
}

// With several writes at once, the writes of different names are made
// together while each name's writes stay in token order (G2), across a replay
// of a backlog (one round holding every name) and the live path (many rounds,
// names submitting concurrently); each key ends with its newest value. With
// one writer every write is made in token order across names, as a
// sequential writer would.
func TestParallelWritersKeepEachNamesOrder(t *testing.T) {
	// The backlog is longer than the replay head, so the head (the first
	// round) holds backlog batches only, whichever live batches are
	// submitted before the node's takeover.
	const names, liveRounds = 6, 25
	const backlogRounds = applier.ReplayHeadBatches/names + 1
	for _, writers := range []int{1, 8} {
		t.Run(fmt.Sprintf("writers-%d", writers), func(t *testing.T) {
			e := newEnv(t, ops.Limits{})
			callers := make([]*client.Caller, names)
			for i := range callers {
				callers[i] = e.register(t, fmt.Sprintf("svc-%d", i))
			}
			// Each batch sets a key of its name's five, sets and deletes a key
			// of its own and, once the node runs, sets a key all names share
			// (which puts the names of a round in one lane group: the backlog
			// round does not touch it, so its names can be written together).
			// want holds the newest value of each name's keys, last each
			// name's last token, shared the newest value of the shared key.
			var mu sync.Mutex
			want := map[string]string{}
			last := make([]tokenseq.Token, names)
			var shared struct {
				tok tokenseq.Token
				v   string
			}
			submit := func(i, r int) error {
				name := callers[i].Name()
				own := fmt.Sprintf("%s-k%d", name, r%5)
				tmp := fmt.Sprintf("%s-t%d", name, r)
				v := fmt.Sprintf("%s:%d", name, r)
				batch := []ops.Op{ops.Set(own, []byte(v), 0), ops.Set(tmp, []byte(v), 0), ops.Delete(tmp)}
				if r >= backlogRounds {
					batch = append(batch, ops.Set("shared", []byte(v), 0))
				}
				tok, err := callers[i].Submit(e.ctx, batch...)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				want[own], last[i] = v, tok
				if r >= backlogRounds && shared.tok.Less(tok) {
					shared.tok, shared.v = tok, v
				}
				return nil
			}
			for r := range backlogRounds {
				for i := range names {
					if err := submit(i, r); err != nil {
						t.Fatal(err)
					}
				}
			}

			order := newWriteOrder(t, writers == 1)
			// With several writers, the replay round holds all names, so the
			// barrier only lets it through if they are written at once.
			hooks := applier.Hooks{AfterWrite: order.afterWrite}
			if writers > 1 {
				hooks.BeforeWrite = firstWritesTogether(t, names)
			}
			testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr},
				WriteConcurrency: writers, Hooks: hooks})

			var wg sync.WaitGroup
			for i := range names {
				wg.Go(func() {
					for r := backlogRounds; r < backlogRounds+liveRounds; r++ {
						if err := submit(i, r); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			for i := range names {
				if err := callers[i].WaitApplied(e.ctx, last[i]); err != nil {
					t.Fatal(err)
				}
			}
			counts := order.counts()
			for i := range names {
				if name := callers[i].Name(); counts[name] == 0 {
					t.Errorf("no write of %s was seen", name)
				}
			}
			want["shared"] = shared.v
			for k, v := range want {
				if got, ok := e.value(t, k); !ok || got != v {
					t.Errorf("%s = %q (found %v), want %q", k, got, ok, v)
				}
			}
			for i := range names {
				for r := range backlogRounds + liveRounds {
					k := fmt.Sprintf("%s-t%d", callers[i].Name(), r)
					if _, ok := e.value(t, k); ok {
						t.Errorf("%s was deleted last but is in memcached", k)
					}
				}
			}
		})
	}
}

// firstWritesTogether returns a BeforeWrite hook that holds the first write
// of each name until the first writes of n names have all started, and
// fails t if they do not start within 20s.
func firstWritesTogether(t *testing.T, n int) func(context.Context, applier.Write) {
	var (
		mu         sync.Mutex
		started    = map[string]bool{}
		allStarted = make(chan struct{})
	)
	return func(ctx context.Context, w applier.Write) {
		mu.Lock()
		first := !started[w.Name]
		started[w.Name] = true
		if first && len(started) == n {
			close(allStarted)
		}
		mu.Unlock()
		if !first {
			return
		}
		select {
		case <-allStarted:
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
			t.Errorf("%s: the other names' writes did not start while its first write waited", w.Name)
		}
	}
}

// A fatal error in one write of a step stops the round before its next
// step, and the round returns that error without committing: here one
// name's write finds its key written under a newer term (memfence.ErrFenced)
// in the first step, next to the first write of every other name, and no
// other name's second write is made.
func TestWriterFailureStopsTheRound(t *testing.T) {
	const good, perName = 3, 10
	e := newEnv(t, ops.Limits{})
	if err := memcache.New(e.mc.Addr).Set(&memcache.Item{Key: "fenced", Value: []byte("newer"), Flags: 0xffffffff}); err != nil {
		t.Fatal(err)
	}
	bad := e.register(t, "bad")
	if _, err := bad.Set(e.ctx, "fenced", []byte("old"), 0); err != nil {
		t.Fatal(err)
	}
	for i := range good {
		c := e.register(t, fmt.Sprintf("good-%d", i))
		for j := range perName {
			if _, err := c.Set(e.ctx, fmt.Sprintf("good-%d-%d", i, j), []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		}
	}

	// In the first term only: the writes of every good name are counted.
	var (
		mu        sync.Mutex
		firstTerm uint32
		byName    = map[string]int{}
	)
	hooks := applier.Hooks{BeforeWrite: func(ctx context.Context, w applier.Write) {
		mu.Lock()
		defer mu.Unlock()
		if firstTerm == 0 {
			firstTerm = w.Term
		}
		if w.Term == firstTerm && w.Name != "bad" {
			byName[w.Name]++
		}
	}}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	runErr := make(chan error, 1)
	electionDone := make(chan struct{})
	go func() {
		defer close(electionDone)
		ecfg := election.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", LeaseTTL: 2 * time.Second, Logger: testenv.Logger()}
		_ = election.Run(ctx, ecfg, func(l *election.Leadership) error {
			acfg := applier.Config{Etcd: e.cli, Layout: e.layout, Memcached: e.writer(t),
				WriteConcurrency: good + 1, Logger: testenv.Logger(), Hooks: hooks}
			err := applier.Run(l.Context(), acfg, l)
			select {
			case runErr <- err:
			default:
			}
			cancel()
			return err
		})
	}()
	var err error
	select {
	case err = <-runErr:
	case <-e.ctx.Done():
		t.Fatal("the applier did not return")
	}
	cancel()
	<-electionDone
	if !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("applier returned %v, want memfence.ErrFenced", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(byName) != good {
		t.Fatalf("good names written: %d, want %d (each in the failing write's step)", len(byName), good)
	}
	for name, n := range byName {
		if n != 1 {
			t.Errorf("%s: %d writes, want 1: the step after the failing one was made", name, n)
		}
	}
	if wm, _, err := tokenseq.Watermark(e.ctx, e.cli, e.layout); err != nil || !wm.IsZero() {
		t.Errorf("watermark %v (err %v): the failed round committed", wm, err)
	}
}

// A name's operation skipped in favour of another name's newer one on the
// same key is covered only once that newer write is made, so the first
// name's later writes must not land before it: the two names share a lane.
func TestSkippedOperationKeepsItsNamesOrder(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	x, y := e.register(t, "x"), e.register(t, "y")
	others := []*client.Caller{e.register(t, "o1"), e.register(t, "o2"), e.register(t, "o3")}
	mustSubmit := func(c *client.Caller, batch ...ops.Op) tokenseq.Token {
		tok, err := c.Submit(e.ctx, batch...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mustSubmit(x, ops.Set("k2", []byte("x1"), 0))
	mustSubmit(y, ops.Set("k2", []byte("y1"), 0))
	for i, o := range others {
		mustSubmit(o, ops.Set(fmt.Sprintf("o%d", i), []byte("v"), 0))
	}
	last := mustSubmit(x, ops.Set("k4", []byte("x2"), 0))
	var mu sync.Mutex
	k2Written, k4BeforeK2 := false, false
	e.startNode(t, "n1", applier.Hooks{
		BeforeWrite: func(_ context.Context, w applier.Write) {
			mu.Lock()
			defer mu.Unlock()
			if w.Op.Key == "k4" && !k2Written {
				k4BeforeK2 = true
			}
		},
		AfterWrite: func(w applier.Write) {
			mu.Lock()
			defer mu.Unlock()
			if w.Op.Key == "k2" {
				k2Written = true
			}
		},
	}, ops.Limits{})
	if err := x.WaitApplied(e.ctx, last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if k4BeforeK2 {
		t.Fatal("x's k4 was written before y's k2, which covers x's skipped k2")
	}
	if v, _ := e.value(t, "k2"); v != "y1" {
		t.Fatalf("k2 = %q", v)
	}
}
