package applier

import (
	"context"
	"errors"
	"sync"
)

var errInboxClosed = errors.New("applier: inbox closed")

// inbox hands batches from the watch pump to the applying goroutine. It
// holds at most max batches: put waits for room, so a stalled applier stops
// the pump rather than growing without bound. One goroutine puts, one takes.
type inbox struct {
	mu    sync.Mutex
	items []pending
	err   error
	max   int
	ready chan struct{} // signalled when items or err appear
	room  chan struct{} // signalled when items are taken
}

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

// take waits for items and returns up to n of them in order.
func (in *inbox) take(ctx context.Context, n int) ([]pending, error) {
	for {
		in.mu.Lock()
		if k := min(n, len(in.items)); k > 0 {
			chunk := make([]pending, k)
			copy(chunk, in.items)
			in.items = in.items[k:]
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
