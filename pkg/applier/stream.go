package applier

import (
	"context"
	"errors"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// feed is where the pump hands batches over: the inbox, the watermark wm
// that the batches handed over come after, and the revision mark at which
// this leader's takeover mark was written.
type feed struct {
	in   *inbox
	wm   tokenseq.Token
	mark int64
}

// pump streams the pending batches after f's watermark, and then every new
// one, into f's inbox in token order, with a mark item where f's takeover
// mark appears.
//
// It reads etcd's history with a watch from the watermark's revision: only
// batches accepted since then are read, however many applied ones etcd still
// holds as deleted keys, and never all at once. When the applier falls
// behind the watch by more than the inbox, the watch is cancelled and opened
// again where it stopped (see stream), so that the etcd client does not
// buffer what the applier has no room for. When etcd has compacted the
// history the watch needs, the pending batches are read with one range read
// (which holds them all in memory once), and the watch goes on from that
// read's revision.
//
// With st, what a standby read (see Standby), it hands over the batches the
// standby holds and reads on from the standby's watch, which is caught up.
func (a *applier) pump(ctx context.Context, f feed, st *followState) {
	in, from := f.in, f.wm
	next := max(from.Revision, 1) // the first revision not read yet
	var rest []*clientv3.Event    // read, not handed over yet
	var w *openWatch
	if st != nil {
		items := slices.DeleteFunc(st.items, func(it pending) bool { return applied(from, it) })
		a.stats.FromStandby.Add(uint64(len(items)))
		if !in.put(ctx, items) {
			in.fail(errInboxFull)
			return
		}
		next, w = st.next, &st.watch
	}
	for {
		var err error
		next, rest, err = a.stream(ctx, f, next, rest, w)
		w = nil
		if errors.Is(err, ErrHistoryCompacted) {
			// What was read before the history went is handed over first:
			// the range read reads on from next.
			if _, ok := a.handOver(ctx, f, rest, 0); !ok {
				err = errInboxFull
			} else {
				rest = nil
				next, err = a.readPending(ctx, f, next)
			}
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

// openWatch is a watch and the function that cancels it.
type openWatch struct {
	wch    clientv3.WatchChan
	cancel context.CancelFunc
}

// watchPending watches from key start to the end of the ops range, from
// revision rev, without deletes.
//
// Not fragmented (clientv3.WithFragment): a response of 1000 revisions of
// groups of batches can take tens of MiB, which fragments would spare the
// leader from receiving as one message, but etcd computes a fragment's size
// again after each event it adds, which slows a drain far more than the
// memory saved is worth (BENCHMARKS.md has the figures).
func watchPending(ctx context.Context, cfg Config, start string, rev int64) clientv3.WatchChan {
	return cfg.Etcd.Watch(ctx, start,
		clientv3.WithRange(cfg.Layout.OpsEnd()), clientv3.WithRev(rev), clientv3.WithFilterDelete())
}

// responseErr is the error a watch response carries: ErrHistoryCompacted
// when the history it starts from is gone.
func responseErr(wr clientv3.WatchResponse) error {
	if wr.CompactRevision != 0 {
		return ErrHistoryCompacted
	}
	if err := wr.Err(); err != nil {
		return fmt.Errorf("applier: watch: %w", err)
	}
	return nil
}

var errInboxFull = errors.New("applier: inbox full")

// stream watches from revision next, hands over rest (events of the
// previous watch not handed over yet), and then the batches the watch
// reads, until the watch ends or the applier falls behind it. It returns the
// revision to go on from and what it read and has not handed over: at most
// one inbox's worth, or, with an error, whatever it held.
//
// etcd serves a watch that starts in the past up to 1000 revisions per
// response, one response per pass of its resync loop, and each pass reads
// the history from the watch's revision to the head; the etcd client
// buffers responses not received yet without bound. So responses are
// received as they come and handed over as room appears while the watch
// stays open, and the watch is cancelled only when a response comes while
// more than one inbox's worth of the earlier ones is still held: what is
// held stays within an inbox and two responses, and a watch that etcd
// serves no faster than the applier takes goes on without being opened
// again (each opening costs a pass over the history, and the response etcd
// may have sent before it saw the cancel). When it is cancelled, what is
// held is handed over until one inbox's worth is left, and the next watch is
// opened while that is handed over. The applier's own deletes, as many as
// the batches, are filtered out by etcd.
//
// With w, it reads on from that open watch (a standby's), opening none.
func (a *applier) stream(ctx context.Context, f feed, next int64, rest []*clientv3.Event, w *openWatch) (
	int64, []*clientv3.Event, error,
) {
	in := f.in
	a.stats.Watches.Add(1)
	if w == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		w = &openWatch{cancel: cancel, wch: watchPending(wctx, a.cfg, a.cfg.Layout.TakeoverMark(), next)}
	}
	wch, cancel := w.wch, w.cancel
	defer cancel()
	// A standby's watch lives in the node's context, not in ctx.
	defer context.AfterFunc(ctx, cancel)()
	if _, ok := a.handOver(ctx, f, rest, 0); !ok {
		return next, nil, errInboxFull
	}
	var held []*clientv3.Event // read from this watch, not handed over yet
	for {
		var ok bool
		if held, ok = a.handOverFree(f, held, 0); !ok {
			return next, nil, errInboxFull
		}
		var room <-chan struct{}
		if len(held) > 0 {
			room = in.room
		}
		select {
		case wr, open := <-wch:
			if !open {
				if err := ctx.Err(); err != nil {
					return next, nil, err
				}
				return next, nil, errors.New("applier: watch closed")
			}
			if err := responseErr(wr); err != nil {
				a.watchResponse(wr, held, err)
				return next, held, err
			}
			a.stats.seeRevision(wr.Header.Revision)
			if len(wr.Events) == 0 {
				continue
			}
			// A response holds whole revisions, so the next watch starts
			// after the last one.
			next = wr.Events[len(wr.Events)-1].Kv.ModRevision + 1
			behind := len(held) > in.max
			if len(held) == 0 {
				held = wr.Events
			} else {
				held = append(held, wr.Events...)
			}
			a.watchResponse(wr, held, nil)
			if !behind {
				continue
			}
			// Behind: more than an inbox's worth of the last response was
			// still held when this one came.
			cancel()
			rest, ok := a.handOver(ctx, f, held, in.max)
			if !ok {
				return next, nil, errInboxFull
			}
			return next, rest, nil
		case <-room:
		case <-ctx.Done():
			return next, nil, ctx.Err()
		}
	}
}

// watchResponse runs Hooks.WatchResponse, if set, for response wr, after
// which held are the events waiting for room in the inbox.
func (a *applier) watchResponse(wr clientv3.WatchResponse, held []*clientv3.Event, err error) {
	if a.cfg.Hooks.WatchResponse != nil {
		a.cfg.Hooks.WatchResponse(len(wr.Events), len(held), err)
	}
}

// handOverFree hands over as much of evs as f's inbox has room for, without
// waiting, decoding only that, until at most keep are left; it
// returns the rest, and false when the inbox was closed.
func (a *applier) handOverFree(f feed, evs []*clientv3.Event, keep int) ([]*clientv3.Event, bool) {
	k := min(f.in.free(), len(evs)-keep)
	if k <= 0 {
		return evs, !f.in.closed()
	}
	if !f.in.tryPut(a.appendEvents(nil, evs[:k], f.wm, f.mark)) {
		return nil, false
	}
	clear(evs[:k]) // let the events handed over be collected
	return evs[k:], true
}

// handOver hands evs over as room appears in f's inbox, until at most keep
// are left; it returns those, and false when ctx ended or the inbox was
// closed first.
func (a *applier) handOver(ctx context.Context, f feed, evs []*clientv3.Event, keep int) ([]*clientv3.Event, bool) {
	for {
		var ok bool
		if evs, ok = a.handOverFree(f, evs, keep); !ok {
			return nil, false
		}
		if len(evs) <= keep {
			return evs, true
		}
		if !f.in.waitRoom(ctx) {
			return nil, false
		}
	}
}

// readPending hands over every pending batch from revision next on that
// f's watermark does not cover, read with one range read, then a mark (the
// takeover mark was written before the read); it returns the revision after
// the read's.
func (a *applier) readPending(ctx context.Context, f feed, next int64) (int64, error) {
	in, wm := f.in, f.wm
	resp, err := a.cfg.Etcd.Get(ctx, a.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(),
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
		if ev.Type != clientv3.EventTypePut || string(ev.Kv.Key) < markKey {
			continue // a delete, or a key outside the ops range
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
