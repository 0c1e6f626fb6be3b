package client

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// env is an embedded etcd with a Client on namespace "t".
type env struct {
	cli    *clientv3.Client
	c      *Client
	layout keyspace.Layout
	ctx    context.Context
}

func newEnv(t testing.TB) *env {
	t.Helper()
	_, cli := testenv.Etcd(t)
	c, err := New(Config{Etcd: cli, Namespace: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return &env{cli: cli, c: c, layout: c.Layout(), ctx: testenv.Ctx(t, 2*time.Minute)}
}

// startNode runs a coordinator node writing to a fresh memcached.
func (e *env) startNode(t testing.TB) (*testenv.Node, *testenv.Memcached) {
	t.Helper()
	mc := testenv.StartMemcached(t)
	n := testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{mc.Addr}})
	return n, mc
}

// session opens a session closed when the test ends.
func (e *env) session(t testing.TB, name string, opts SessionConfig) *Session {
	t.Helper()
	if opts.TTL == 0 {
		opts.TTL = 5 * time.Second
	}
	s, err := e.c.NewSession(e.ctx, name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close session: %v", err)
		}
	})
	return s
}

// lease returns the lease of the session's current incarnation.
func (s *Session) lease() clientv3.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inc.LeaseID
}

// revoke revokes the session's lease from outside, as an expiry would.
func (e *env) revoke(t testing.TB, s *Session) int64 {
	t.Helper()
	s.mu.Lock()
	inc, lease := s.inc.Incarnation, s.inc.LeaseID
	s.mu.Unlock()
	if _, err := e.cli.Revoke(e.ctx, lease); err != nil {
		t.Fatal(err)
	}
	return inc
}

func (e *env) count(t testing.TB, prefix string) int64 {
	t.Helper()
	resp, err := e.cli.Get(e.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// history replays, from etcd's own history, what was written under the
// namespace since it was started.
type history struct {
	e     *env
	start int64
}

func (e *env) history(t testing.TB) *history {
	t.Helper()
	resp, err := e.cli.Get(e.ctx, "history-start")
	if err != nil {
		t.Fatal(err)
	}
	return &history{e: e, start: resp.Header.Revision}
}

// written is what a history saw.
type written struct {
	// regPuts counts puts of each registration key, by name.
	regPuts map[string]int
	// batches lists every batch created, in order.
	batches []keyspace.BatchKey
	// receipts lists the leases of the receipts created.
	receipts []int64
}

// collect writes a marker and reads every event from the start up to it.
func (h *history) collect(t testing.TB) written {
	t.Helper()
	e := h.e
	marker := e.layout.Prefix() + "~history-marker"
	if _, err := e.cli.Put(e.ctx, marker, "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	w := written{regPuts: map[string]int{}}
	for wr := range e.cli.Watch(ctx, e.layout.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(h.start+1)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("history watch: %v", err)
		}
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if key == marker {
				return w
			}
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			switch {
			case strings.HasPrefix(key, e.layout.RegPrefix()):
				w.regPuts[e.layout.NameFromReg(key)]++
			case strings.HasPrefix(key, e.layout.OpsPrefix()) && ev.IsCreate():
				bk, err := e.layout.ParseBatch(key)
				if err != nil {
					t.Fatalf("batch key %q: %v", key, err)
				}
				w.batches = append(w.batches, bk)
			case strings.HasPrefix(key, e.layout.ReceiptsPrefix()) && ev.IsCreate():
				w.receipts = append(w.receipts, ev.Kv.Lease)
			}
		}
	}
	t.Fatal("history watch ended before the marker")
	return w
}

// eventLog records a session's events.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, ev)
}

func (l *eventLog) of(k EventKind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, ev := range l.evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// wait waits until n events of kind k were seen and returns them.
func (l *eventLog) wait(t testing.TB, k EventKind, n int) []Event {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() bool { return len(l.of(k)) >= n }, "%d %s events", n, k)
	return l.of(k)
}
