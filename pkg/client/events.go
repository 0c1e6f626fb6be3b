package client

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// EventKind says what happened to a session.
type EventKind uint8

const (
	// EventRegistered: the first incarnation was registered (New).
	EventRegistered EventKind = iota + 1
	// EventLeaseLost: incarnation Old is known to be dead (Err says how);
	// submissions made after it wait for the re-registration.
	EventLeaseLost
	// EventRenewed: incarnation New replaced the dead incarnation Old.
	EventRenewed
	// EventFailed: the session ended for good with Err (superseded or
	// closed); Old is the last incarnation.
	EventFailed
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventRegistered:
		return "registered"
	case EventLeaseLost:
		return "lease-lost"
	case EventRenewed:
		return "renewed"
	case EventFailed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a change of a session's incarnation.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Old is the incarnation token that ended, zero for EventRegistered.
	Old int64
	// New is the incarnation token registered, zero unless EventRegistered
	// or EventRenewed.
	New int64
	// Err is why Old ended.
	Err error
	// Time is when the session learnt of it.
	Time time.Time
}

// eventQueue hands a session's events to its OnEvent callback, in the order
// they were emitted, on a goroutine of its own so that the callback never
// runs under the session's lock.
type eventQueue struct {
	onEvent func(Event) // nil: events are dropped
	signal  chan struct{}

	mu      sync.Mutex
	pending []Event
}

func newEventQueue(onEvent func(Event)) *eventQueue {
	return &eventQueue{onEvent: onEvent, signal: make(chan struct{}, 1)}
}

// emit queues ev. It never blocks; callers emit under the session's lock,
// so the queue's order is the order of the session's changes.
func (q *eventQueue) emit(ev Event) {
	if q.onEvent == nil {
		return
	}
	ev.Time = time.Now()
	q.mu.Lock()
	q.pending = append(q.pending, ev)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// take removes and returns the queued events.
func (q *eventQueue) take() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.pending
	q.pending = nil
	return evs
}

// run calls OnEvent with each event until ctx ends, then delivers what is
// left.
func (q *eventQueue) run(ctx context.Context) {
	for {
		evs := q.take()
		for _, ev := range evs {
			q.onEvent(ev)
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-q.signal:
		case <-ctx.Done():
			for _, ev := range q.take() {
				q.onEvent(ev)
			}
			return
		}
	}
}
