package applier

import (
	"context"
	"errors"
	"sync"
	"time"
)

var errInboxClosed = errors.New("applier: inbox closed")

// inbox hands batches from the watch pump to the applying goroutine. It
// holds at most max batches: put waits for room, so a stalled applier stops
// the pump rather than growing without bound. One goroutine puts, one takes.
//
// It also keeps the leader's backlog, the batches it has read and not
// committed: those it holds, and those of every take not yet marked done
// (see done). With stats set, the backlog is published there
// (Stats.PendingBatches, PendingOps, OldestPending) each time it changes,
// under the inbox's lock, so the figures are consistent with each other.
type inbox struct {
	mu    sync.Mutex
	items []pending
	err   error
	max   int
	ready chan struct{} // signalled when items or err appear
	room  chan struct{} // signalled when items are taken

	stats *Stats // where the backlog is published; nil publishes nothing
	held  load   // of items
	taken []load // of each take not done yet, oldest first
}

// load is the backlog of some batches: how many, their operations, and when
// the first of them was read (unix nanoseconds, zero for none).
type load struct {
	batches, ops int64
	oldest       int64
}

// add adds it to l.
func (l *load) add(it pending) {
	if it.mark {
		return
	}
	l.batches++
	if it.batch != nil {
		l.ops += int64(len(it.batch.Ops))
	}
	if l.oldest == 0 {
		l.oldest = it.seen
	}
}

// loadOf is the load of items.
func loadOf(items []pending) load {
	var l load
	for _, it := range items {
		l.add(it)
	}
	return l
}

// publish stores the backlog in stats; in.mu is held.
func (in *inbox) publish() {
	if in.stats == nil {
		return
	}
	total := in.held
	if len(in.taken) > 0 {
		total.oldest = in.taken[0].oldest
	}
	for _, l := range in.taken {
		total.batches += l.batches
		total.ops += l.ops
	}
	if total.oldest == 0 {
		total.oldest = in.held.oldest
	}
	in.stats.PendingBatches.Store(total.batches)
	in.stats.PendingOps.Store(total.ops)
	in.stats.OldestPending.Store(total.oldest)
}

// done marks the first n takes not done yet as committed: their batches
// leave the backlog.
func (in *inbox) done(n int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.taken = in.taken[min(n, len(in.taken)):]
	in.publish()
}

// unpublish clears the backlog published in stats: the inbox is no longer
// used, and a new leader's applier reads the batches again.
func (in *inbox) unpublish() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.held, in.taken = load{}, nil
	in.publish()
}

// readTime returns the time a batch is read at, for the backlog's age.
func readTime() int64 { return time.Now().UnixNano() }

func newInbox(max int) *inbox {
	return &inbox{max: max, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put appends items, waiting while the inbox is full; it reports false when
// ctx ended or the inbox was closed first.
func (in *inbox) put(ctx context.Context, items []pending) bool {
	for {
		if in.tryPut(items) {
			return true
		}
		if in.closed() {
			return false
		}
		select {
		case <-in.room:
		case <-ctx.Done():
			return false
		}
	}
}

// tryPut appends items if the inbox has room, without waiting; it reports
// whether it did.
func (in *inbox) tryPut(items []pending) bool {
	if len(items) == 0 {
		return true
	}
	in.mu.Lock()
	if in.err != nil || len(in.items) >= in.max {
		in.mu.Unlock()
		return false
	}
	in.items = append(in.items, items...)
	if in.stats != nil {
		for _, it := range items {
			in.held.add(it)
		}
		in.publish()
	}
	in.mu.Unlock()
	signal(in.ready)
	return true
}

// free returns how many more items the inbox holds before it is full.
func (in *inbox) free() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return max(in.max-len(in.items), 0)
}

// closed reports whether the inbox takes no more items.
func (in *inbox) closed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.err != nil
}

// waitRoom waits until the inbox is not full; it reports false when ctx
// ended or the inbox was closed first. With one goroutine putting, the room
// only grows until it puts.
func (in *inbox) waitRoom(ctx context.Context) bool {
	for {
		if in.closed() {
			return false
		}
		if in.free() > 0 {
			return true
		}
		select {
		case <-in.room:
		case <-ctx.Done():
			return false
		}
	}
}

// fail records why no more items will come; take returns it once the items
// before it are taken.
func (in *inbox) fail(err error) {
	in.mu.Lock()
	if in.err == nil {
		in.err = err
	}
	in.mu.Unlock()
	signal(in.ready)
}

// close makes every later put return false.
func (in *inbox) close() {
	in.fail(errInboxClosed)
	signal(in.room)
}

// take waits for items and returns up to n of them in order. Each take
// that returns items stays in the backlog until marked done.
func (in *inbox) take(ctx context.Context, n int) ([]pending, error) {
	for {
		in.mu.Lock()
		if k := min(n, len(in.items)); k > 0 {
			chunk := make([]pending, k)
			copy(chunk, in.items)
			in.items = in.items[k:]
			if in.stats != nil {
				l := loadOf(chunk)
				in.taken = append(in.taken, l)
				in.held.batches -= l.batches
				in.held.ops -= l.ops
				in.held.oldest = 0
				for _, it := range in.items {
					if !it.mark {
						in.held.oldest = it.seen
						break
					}
				}
			}
			in.mu.Unlock()
			signal(in.room)
			return chunk, nil
		}
		err := in.err
		in.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-in.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
