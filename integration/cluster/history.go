package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

// The members never compact on their own: FinalState reads the namespace's
// key history from revision 1. Compact compacts it on purpose (so that a
// new leader finds the history it would watch gone and reads the pending
// batches with a range read), and keeps a copy of what FinalState reads of
// the history first: from the first Compact on, a watch follows the
// namespace from revision 1 and records every batch, registration change,
// term and watermark, and every compaction waits until that copy holds the
// revision it compacts at.

// historyCopy is what a watch of the namespace from revision 1 recorded.
type historyCopy struct {
	mu      sync.Mutex
	evs     []*clientv3.Event // every event, in revision order
	next    int64             // the first revision not recorded yet
	err     error             // what ended the copy, if anything did
	changed chan struct{}     // closed and replaced when next or err change
}

// Compact compacts etcd's history at its current revision, once the copy of
// the history has recorded everything before it, and returns that
// revision. From then on FinalState reads the history from the copy.
func (c *Cluster) Compact(ctx context.Context) (int64, error) {
	h := c.followHistory()
	rev, err := c.historyMark(ctx, "zz-history-compact")
	if err != nil {
		return 0, err
	}
	if err := h.waitFor(ctx, rev+1); err != nil {
		return 0, err
	}
	if _, err := c.Client.Compact(ctx, rev); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return 0, fmt.Errorf("compact etcd at %d: %w", rev, err)
	}
	c.histMu.Lock()
	c.compactedAt = max(c.compactedAt, rev)
	c.histMu.Unlock()
	return rev, nil
}

// CompactedAt is the revision of the last compaction Compact made, zero if
// it made none.
func (c *Cluster) CompactedAt() int64 {
	c.histMu.Lock()
	defer c.histMu.Unlock()
	return c.compactedAt
}

// historyMark writes key under the namespace and returns the revision of
// the write: everything before it is history to read.
func (c *Cluster) historyMark(ctx context.Context, key string) (int64, error) {
	put, err := c.Client.Put(ctx, c.Layout.Prefix()+key, "mark")
	if err != nil {
		return 0, fmt.Errorf("write history marker: %w", err)
	}
	return put.Header.Revision, nil
}

// followHistory returns the copy of the history, starting it the first
// time.
func (c *Cluster) followHistory() *historyCopy {
	c.histMu.Lock()
	defer c.histMu.Unlock()
	if c.hist == nil {
		c.hist = &historyCopy{next: 1, changed: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.hist.follow(ctx, c)
		}()
		c.t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	return c.hist
}

// follow records the namespace's history with a watch from h.next, again
// after each break, until ctx ends or the history it needs is compacted
// (which Compact rules out: it waits for the copy first).
func (h *historyCopy) follow(ctx context.Context, c *Cluster) {
	for ctx.Err() == nil {
		h.mu.Lock()
		from := h.next
		h.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.Client.Watch(wctx, c.Layout.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(from)) {
			if wr.CompactRevision != 0 {
				h.fail(fmt.Errorf("the history from revision %d was compacted at %d before it was copied", from, wr.CompactRevision))
				cancel()
				return
			}
			if wr.Err() != nil {
				break
			}
			h.record(wr.Events)
		}
		cancel()
		// The watch broke (a member lost, no etcd leader): go on from
		// where it stopped, a little later.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// record adds the events of one watch response.
func (h *historyCopy) record(evs []*clientv3.Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		if ev.Kv.ModRevision >= h.next { // not delivered again after a break
			h.evs = append(h.evs, ev)
		}
	}
	h.next = max(h.next, evs[len(evs)-1].Kv.ModRevision+1)
	close(h.changed)
	h.changed = make(chan struct{})
}

// fail ends the copy with err.
func (h *historyCopy) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitFor waits until the copy holds every revision before rev.
func (h *historyCopy) waitFor(ctx context.Context, rev int64) error {
	for {
		h.mu.Lock()
		next, err, changed := h.next, h.err, h.changed
		h.mu.Unlock()
		switch {
		case err != nil:
			return fmt.Errorf("copy of etcd's history: %w", err)
		case next >= rev:
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("copy of etcd's history at %d, waiting for %d: %w", next, rev, ctx.Err())
		}
	}
}

// copiedHistory fills f's history from the copy, up to a marker it writes.
func (c *Cluster) copiedHistory(ctx context.Context, f *checker.Final) error {
	h := c.followHistory()
	end, err := c.historyMark(ctx, "zz-history-end")
	if err != nil {
		return err
	}
	if err := h.waitFor(ctx, end); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.evs {
		if ev.Kv.ModRevision >= end {
			break
		}
		if err := c.addHistoryEvent(f, ev); err != nil {
			return err
		}
	}
	return nil
}
