package tokenseq

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// AppliedWatcher waits for tokens to be applied, for many waiters over one
// watch of the applied watermark.
//
// WaitApplied reads the watermark and, when its token is not covered yet,
// opens a watch from the revision it read. Under load that revision is
// already in the past when the watch starts, and etcd serves such a watch
// from its resync loop, every 100 ms: each waiter may wait up to 100 ms
// longer than it needs to, and each costs a watch. An AppliedWatcher keeps
// one watch, caught up, while anyone waits, and releases every waiter whose
// token the watermark reaches on the event that moves it. When nobody waits,
// it closes the watch; the next waiter opens it again.
type AppliedWatcher struct {
	cli    *clientv3.Client
	layout keyspace.Layout

	mu      sync.Mutex
	wm      Token // the newest watermark seen; it never goes back
	waiters waiterHeap
	stop    context.CancelFunc // stops the follow goroutine; nil when none runs
}

var errWatchClosed = errors.New("tokenseq: watermark watch closed")

// NewAppliedWatcher returns a watcher of layout's applied watermark.
func NewAppliedWatcher(cli *clientv3.Client, layout keyspace.Layout) *AppliedWatcher {
	return &AppliedWatcher{cli: cli, layout: layout}
}

type waiter struct {
	tok   Token
	done  chan struct{}
	index int // in the heap; -1 once released or removed
}

// waiterHeap orders waiters by token, lowest first.
type waiterHeap []*waiter

func (h waiterHeap) Len() int           { return len(h) }
func (h waiterHeap) Less(i, j int) bool { return h[i].tok.Less(h[j].tok) }
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}

// Wait blocks until the applied watermark reaches tok (G8) or ctx ends.
func (aw *AppliedWatcher) Wait(ctx context.Context, tok Token) error {
	aw.mu.Lock()
	if !aw.wm.Less(tok) {
		aw.mu.Unlock()
		return nil
	}
	w := &waiter{tok: tok, done: make(chan struct{})}
	heap.Push(&aw.waiters, w)
	if aw.stop == nil {
		fctx, cancel := context.WithCancel(context.Background())
		aw.stop = cancel
		go aw.follow(fctx)
	}
	aw.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		aw.mu.Lock()
		released := w.index < 0 // the watermark reached tok as ctx ended
		if !released {
			heap.Remove(&aw.waiters, w.index)
			aw.stopIfIdleLocked()
		}
		aw.mu.Unlock()
		if released {
			return nil
		}
		return ctx.Err()
	}
}

// stopIfIdleLocked stops following when nobody waits.
func (aw *AppliedWatcher) stopIfIdleLocked() {
	if len(aw.waiters) == 0 && aw.stop != nil {
		aw.stop()
		aw.stop = nil
	}
}

// follow reads the watermark and follows it with a watch until ctx ends
// (nobody waits), starting over after errors.
func (aw *AppliedWatcher) follow(ctx context.Context) {
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for ctx.Err() == nil {
		if err := aw.followOnce(ctx); err == nil || !retry.Sleep(ctx, backoff.Next()) {
			return
		}
	}
}

// followOnce reads the watermark, then watches it from the revision read;
// it returns the error that broke the read or the watch.
func (aw *AppliedWatcher) followOnce(ctx context.Context) error {
	wm, rev, err := Watermark(ctx, aw.cli, aw.layout)
	if err != nil {
		return err
	}
	aw.advance(wm)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range aw.cli.Watch(wctx, aw.layout.Applied(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if t, err := ParseToken(string(ev.Kv.Value)); err == nil {
				aw.advance(t)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errWatchClosed
}

// advance records watermark wm and releases the waiters it covers.
func (aw *AppliedWatcher) advance(wm Token) {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	aw.wm = Max(aw.wm, wm)
	for len(aw.waiters) > 0 && !aw.wm.Less(aw.waiters[0].tok) {
		close(heap.Pop(&aw.waiters).(*waiter).done)
	}
	aw.stopIfIdleLocked()
}
