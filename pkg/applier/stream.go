package applier

import (
	"context"
	"errors"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// pump streams the pending batches after token from, and then every new
// one, into the inbox in token order, with a mark item where the takeover
// mark written at revision mark appears.
//
// It reads etcd's history with a watch from the watermark's revision: only
// batches accepted since then are read, however many applied ones etcd still
// holds as deleted keys, and never all at once. When the inbox is full the
// watch is cancelled and opened again where it stopped once there is room, so
// that the etcd client does not buffer what the applier has no room for.
// When etcd has compacted the history the watch needs, the pending batches
// are read with a range read instead (which holds them all in memory once),
// and the watch goes on from that read's revision.
func (a *applier) pump(ctx context.Context, in *inbox, from tokenseq.Token, mark int64) {
	next := max(from.Revision, 1) // the first revision not handed over yet
	for {
		var err error
		next, err = a.stream(ctx, in, from, next, mark)
		if errors.Is(err, errHistoryCompacted) {
			next, err = a.readPending(ctx, in, from, next)
		}
		if err != nil {
			in.fail(err)
			return
		}
	}
}

// applied reports whether the watermark wm covers it. Valid records of one
// transaction have distinct indexes, so the one at the watermark was
// applied. A bad record (set aside, never written) may share its token with
// others of its transaction, all ordered at the index they could be read
// to, and a round may have ended among them: it is handed over again, and
// setting it aside again does no harm.
func applied(wm tokenseq.Token, it pending) bool {
	return it.tok.Less(wm) || (it.tok == wm && it.batch != nil)
}

var (
	errHistoryCompacted = errors.New("applier: etcd history compacted")
	errInboxFull        = errors.New("applier: inbox full")
)

// stream watches from revision next and hands the batches over until the
// watch ends or the inbox is full; it returns the revision to go on from.
// A watch response holds whole revisions, so no batch is handed over twice.
func (a *applier) stream(ctx context.Context, in *inbox, wm tokenseq.Token, next, mark int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := a.cfg.Client.Watch(wctx, a.cfg.Layout.TakeoverMark(),
		clientv3.WithRange(a.cfg.Layout.OpsEnd()), clientv3.WithRev(next))
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return next, errHistoryCompacted
		}
		if err := wr.Err(); err != nil {
			return next, fmt.Errorf("applier: watch: %w", err)
		}
		if len(wr.Events) == 0 {
			continue
		}
		items := a.appendEvents(nil, wr.Events, wm, mark)
		// A response holds whole revisions, so the next watch starts after
		// the last one.
		next = wr.Events[len(wr.Events)-1].Kv.ModRevision + 1
		if in.tryPut(items) {
			continue
		}
		cancel()
		if !in.put(ctx, items) {
			return next, errInboxFull
		}
		return next, nil
	}
	if err := ctx.Err(); err != nil {
		return next, err
	}
	return next, errors.New("applier: watch closed")
}

// readPending hands over every pending batch from revision next on that
// the watermark wm does not cover, read with one range read, then a mark
// (the takeover mark was written before the read); it returns the revision
// after the read's.
func (a *applier) readPending(ctx context.Context, in *inbox, wm tokenseq.Token, next int64) (int64, error) {
	resp, err := a.cfg.Client.Get(ctx, a.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("applier: read pending: %w", err)
	}
	a.log.Warn("etcd history compacted past the watermark; read pending batches with a range read",
		"batches", len(resp.Kvs), "watermark", wm.String())
	items := make([]pending, 0, len(resp.Kvs)+1)
	for _, kv := range resp.Kvs {
		it := a.decode(string(kv.Key), kv.ModRevision, kv.Value)
		if it.tok.Revision >= next && !applied(wm, it) {
			items = append(items, it)
		}
	}
	// Batches stored by one transaction share a revision; their index
	// orders them.
	slices.SortStableFunc(items, func(x, y pending) int { return x.tok.Compare(y.tok) })
	items = append(items, pending{mark: true})
	for len(items) > 0 {
		n := min(len(items), a.cfg.MaxInboxBatches)
		if !in.put(ctx, items[:n]) {
			return 0, errInboxFull
		}
		items = items[n:]
	}
	return resp.Header.Revision + 1, nil
}

// appendEvents turns watch events into pending items: the puts of batches
// the watermark wm does not cover, and a mark item for the takeover mark
// written at revision mark. Deletes, and marks of earlier takeovers, are
// skipped.
func (a *applier) appendEvents(queue []pending, evs []*clientv3.Event, wm tokenseq.Token, mark int64) []pending {
	markKey := a.cfg.Layout.TakeoverMark()
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut {
			continue
		}
		if string(ev.Kv.Key) == markKey {
			if ev.Kv.ModRevision >= mark {
				queue = append(queue, pending{mark: true})
			}
			continue
		}
		if it := a.decode(string(ev.Kv.Key), ev.Kv.ModRevision, ev.Kv.Value); !applied(wm, it) {
			queue = append(queue, it)
		}
	}
	return queue
}
