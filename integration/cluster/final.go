package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Pending counts the batches not yet applied.
func (c *Cluster) Pending(ctx context.Context) (int, error) {
	resp, err := c.Client.Get(ctx, c.Layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

// Watermark reads the applied watermark.
func (c *Cluster) Watermark(ctx context.Context) (tokenseq.Token, error) {
	wm, _, err := tokenseq.Watermark(ctx, c.Client, c.Layout)
	return wm, err
}

// WaitDrained waits until no batch is pending.
func (c *Cluster) WaitDrained(ctx context.Context) error {
	var n int
	var lastErr error
	err := poll(ctx, 50*time.Millisecond, func() bool {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var err error
		n, err = c.Pending(gctx)
		lastErr = err
		return err == nil && n == 0
	})
	if err != nil {
		return fmt.Errorf("%d batches still pending (last error %v): %w", n, lastErr, err)
	}
	return nil
}

// WaitApplied waits until the watermark reaches tok (revision and index).
func (c *Cluster) WaitApplied(ctx context.Context, tok tokenseq.Token) error {
	var wm tokenseq.Token
	err := poll(ctx, 50*time.Millisecond, func() bool {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var err error
		wm, err = c.Watermark(gctx)
		return err == nil && !wm.Less(tok)
	})
	if err != nil {
		return fmt.Errorf("watermark %s never reached %s: %w", wm, tok, err)
	}
	return nil
}

// checkerToken is tok as the checker records it.
func checkerToken(tok tokenseq.Token) checker.Token {
	return checker.Token{Revision: tok.Revision, Index: tok.Index}
}

// FinalState reads what the checker needs at the end: memcached's items
// for keys (directly, not through a proxy), the watermark, the pending
// count, and from etcd's key history every accepted batch, registration
// change, term and watermark of the namespace.
func (c *Cluster) FinalState(ctx context.Context, keys []string) (checker.Final, error) {
	f := checker.Final{Memcached: map[string]checker.Item{}}
	sel, err := c.ReadSelector()
	if err != nil {
		return f, err
	}
	mc := memcache.NewFromSelector(sel)
	mc.Timeout = 2 * time.Second
	defer mc.Close()
	for _, k := range keys {
		// A get that times out on a busy machine is tried again: the
		// items stay as they are, nothing writes them any more.
		var it *memcache.Item
		var err error
		if perr := poll(ctx, 50*time.Millisecond, func() bool {
			it, err = mc.Get(k)
			return err == nil || errors.Is(err, memcache.ErrCacheMiss)
		}); perr != nil {
			return f, fmt.Errorf("read %s from memcached: %w (%w)", k, err, perr)
		}
		if errors.Is(err, memcache.ErrCacheMiss) {
			f.Memcached[k] = checker.Item{}
		} else {
			f.Memcached[k] = checker.Item{Found: true, Value: string(it.Value), Term: it.Flags}
		}
	}
	wm, err := c.Watermark(ctx)
	if err != nil {
		return f, err
	}
	f.Watermark = checkerToken(wm)
	if f.Pending, err = c.Pending(ctx); err != nil {
		return f, err
	}
	read := c.readHistory
	if c.CompactedAt() > 0 {
		read = c.copiedHistory
	}
	if err := read(ctx, &f); err != nil {
		return f, err
	}
	f.EtcdHistory = true
	return f, nil
}

// readHistory replays the namespace's key history from revision 1 (the
// members compact only when Compact asks them to) up to a marker it
// writes.
func (c *Cluster) readHistory(ctx context.Context, f *checker.Final) error {
	end, err := c.historyMark(ctx, "zz-history-end")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range c.Client.Watch(wctx, c.Layout.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("read etcd history: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision >= end {
				return nil
			}
			if err := c.addHistoryEvent(f, ev); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("etcd history watch closed before the marker")
}

// addHistoryEvent adds to f what an event of the namespace's history says:
// a batch accepted, a registration change, a term taken or a watermark
// written; other keys are no part of the history.
func (c *Cluster) addHistoryEvent(f *checker.Final, ev *clientv3.Event) error {
	key := string(ev.Kv.Key)
	rev := ev.Kv.ModRevision
	switch {
	case strings.HasPrefix(key, c.Layout.OpsPrefix()):
		if ev.Type != clientv3.EventTypePut {
			return nil
		}
		a, err := c.accepted(key, rev, ev.Kv.Value)
		if err != nil {
			return err
		}
		f.Accepted = append(f.Accepted, a)
	case strings.HasPrefix(key, c.Layout.RegPrefix()):
		f.Registrations = append(f.Registrations, checker.RegEvent{
			Name: c.Layout.NameFromReg(key), Rev: rev, Deleted: ev.Type == clientv3.EventTypeDelete,
		})
	case key == c.Layout.Term() && ev.Type == clientv3.EventTypePut:
		f.Terms = append(f.Terms, rev)
	case key == c.Layout.Applied() && ev.Type == clientv3.EventTypePut:
		tok, err := tokenseq.ParseToken(string(ev.Kv.Value))
		if err != nil {
			return fmt.Errorf("watermark record at %d: %w", rev, err)
		}
		f.Watermarks = append(f.Watermarks, checkerToken(tok))
	}
	return nil
}

func (c *Cluster) accepted(key string, rev int64, value []byte) (checker.Accepted, error) {
	bk, err := c.Layout.ParseBatch(key)
	if err != nil {
		return checker.Accepted{}, fmt.Errorf("batch key %q: %w", key, err)
	}
	b, err := ops.DecodeBatch(value)
	if err != nil {
		return checker.Accepted{}, fmt.Errorf("batch %q at %d: %w", key, rev, err)
	}
	// The batch's token is the revision of the transaction that stored it
	// and the index the record carries (its place in that transaction).
	a := checker.Accepted{ID: bk.ID, Name: bk.Name, Incarnation: bk.Incarnation, Token: checker.Token{Revision: rev, Index: b.Index}}
	for _, o := range b.Ops {
		a.Ops = append(a.Ops, checker.Op{Kind: o.Kind.String(), Key: o.Key, Value: string(o.Value)})
	}
	return a, nil
}
