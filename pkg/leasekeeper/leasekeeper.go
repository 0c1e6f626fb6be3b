// Package leasekeeper renews many etcd leases on one LeaseKeepAlive stream,
// so that a node serving thousands of callers' keep-alive streams spends a
// fixed number of goroutines on them: etcd's clientv3 KeepAlive starts a
// goroutine per call.
//
// A Keeper runs two goroutines, from its first lease on, whatever the
// number of leases, and gRPC
// runs its own for the one stream. The sender
// sends each renewal request when it falls due, from a min-heap of due
// times, and closes the channels of leases not renewed in time. The
// receiver opens the stream, reads the answers and reopens the stream after
// an error. A kept lease costs a map entry, a heap entry and a small record;
// each subscriber a channel of one element (Keep) or a func (KeepFunc, for
// a caller that keeps many leases and waits on none of them alone).
//
// Renewals are scheduled as etcd's client schedules them: a lease is sent
// at once when first kept, and again a third of its TTL after each answer.
// After the stream is reopened every lease is sent at once.
package leasekeeper

import (
	"container/heap"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/config"
)

// FirstDeadline bounds the wait for a lease's first answer, while its TTL is
// not known: a lease not answered within it is taken as possibly expired.
// It is the TTL etcd's client assumes before the first answer.
const FirstDeadline = 5 * time.Second

// Bounds of the wait before the stream is reopened after an error: short,
// since every lease's deadline keeps running while the stream is down.
const (
	reopenMin = 100 * time.Millisecond
	reopenMax = 2 * time.Second
)

// sendBatch bounds the requests the sender takes under the lock at a time,
// so that a reopened stream with every lease to send does not hold up Keep
// and the receiver.
const sendBatch = 256

// Config configures a Keeper.
type Config struct {
	// Etcd is the client whose connection carries the stream (required);
	// the connection brings the client's auth token and TLS.
	Etcd *clientv3.Client
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("leasekeeper", "Etcd", "is nil")
	case c.Etcd.Ctx() == nil:
		return config.Errorf("leasekeeper", "Etcd", "has no context: make it with clientv3.New")
	}
	return nil
}

// Keeper renews leases on one stream; see the package comment. Its methods
// are safe for concurrent use.
type Keeper struct {
	client pb.LeaseClient
	log    *slog.Logger
	epoch  time.Time // times below are nanoseconds since epoch, plus one
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // the sender has work earlier than it waits for
	need   chan struct{} // a lease was added: the receiver may open the stream

	mu         sync.Mutex
	started    bool // the goroutines run: see start
	closed     bool
	leases     map[clientv3.LeaseID]*lease
	due        dueHeap
	stream     pb.Lease_LeaseKeepAliveClient // nil while there is none
	streamStop context.CancelFunc
}

// lease is one kept lease: 64 bytes, times as int64 rather than time.Time.
// Its deadline is when its subscribers are told it may have expired: the
// send time of the last answered request plus the TTL answered.
type lease struct {
	id       clientv3.LeaseID
	subs     []*subscriber
	at       int64 // heap key: when the sender next has to look at it
	deadline int64
	sent     int64 // when the request awaiting its answer was sent; 0: none
	index    int   // position in the heap
}

// New returns a Keeper; its goroutines start with the first Keep. The
// stream is opened when a lease is kept, and once
// open stays open until it fails; a failed stream is reopened only while
// there are leases to keep.
func New(cfg Config) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Closing the client ends the renewals too: there is nothing left to
	// renew through, and reopening the stream would only log.
	ctx, cancel := context.WithCancel(cfg.Etcd.Ctx())
	k := &Keeper{
		client: pb.NewLeaseClient(cfg.Etcd.ActiveConnection()),
		log:    cfg.Logger,
		epoch:  time.Now(),
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		need:   make(chan struct{}, 1),
		leases: make(map[clientv3.LeaseID]*lease),
	}
	return k, nil
}

// start runs the Keeper's goroutines, at the first Keep, so that a Keeper
// that keeps nothing (a node whose API holds no stream) runs none. It is
// called with mu held.
func (k *Keeper) start() {
	if k.started {
		return
	}
	k.started = true
	k.wg.Add(2)
	go k.sendLoop()
	go k.recvLoop()
}

// Keep renews lease id until stop is called or the Keeper closes. Each
// successful renewal's TTL in seconds (> 0) is offered on renewals, which
// holds only the newest: a renewal replaces one not yet read.
//
// renewals is closed when etcd answers that the lease is gone, when no
// renewal succeeded within the lease's TTL since the last success (or
// within FirstDeadline of Keep before the first), in which case the lease
// may have expired and the caller must check for itself, and when the
// Keeper closes. stop closes it too, discarding a renewal not yet read, so
// that nothing is received after stop; stop is idempotent and safe from any
// goroutine. Several Keep calls for one lease share its renewals, so that
// it is renewed once per schedule: a later subscriber gets the next
// scheduled renewal, within a third of the TTL. The lease is dropped from
// the schedule when its last subscriber stops.
func (k *Keeper) Keep(id clientv3.LeaseID) (renewals <-chan int64, stop func()) {
	ch := make(chan int64, 1)
	closed := false // under k.mu, as every call of the func below
	stopFunc := k.KeepFunc(id, func(ttl int64) {
		select { // replace a renewal not yet read
		case <-ch:
		default:
		}
		if ttl > 0 {
			ch <- ttl // cannot block: only the Keeper sends, under k.mu
			return
		}
		closed = true
		close(ch)
	})
	return ch, func() {
		stopFunc()
		k.mu.Lock()
		defer k.mu.Unlock()
		if !closed {
			closed = true
			select {
			case <-ch:
			default:
			}
			close(ch)
		}
	}
}

// KeepFunc is Keep for a caller that keeps many leases and cannot wait on
// a channel for each: f is called with each successful renewal's TTL in
// seconds (> 0), and once with 0 when Keep's channel would close (the
// lease gone, unrenewed for its TTL, or the Keeper closing). f is called
// from the Keeper's goroutines with its lock held: it must not block, nor
// call the Keeper. After stop returns, f is not called again.
func (k *Keeper) KeepFunc(id clientv3.LeaseID, f func(ttl int64)) (stop func()) {
	sub := &subscriber{f: f}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		f(0)
		return func() {}
	}
	k.start()
	l := k.leases[id]
	if l == nil {
		now := k.now()
		l = &lease{id: id, at: now, deadline: now + int64(FirstDeadline)}
		k.leases[id] = l
		heap.Push(&k.due, l)
		signal(k.need)
		if l.index == 0 {
			signal(k.wake)
		}
	}
	l.subs = append(l.subs, sub)
	return func() { k.unsubscribe(id, sub) }
}

// subscriber is one KeepFunc's.
type subscriber struct{ f func(ttl int64) }

// Close stops renewing every lease, revoking none, closes every channel
// and waits for the Keeper's goroutines to end. Calling it again does
// nothing.
func (k *Keeper) Close() {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	k.cancel()
	k.wg.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	for len(k.due) > 0 {
		k.end(k.due[0])
	}
}

func (k *Keeper) now() int64 { return int64(time.Since(k.epoch)) + 1 }

func (k *Keeper) unsubscribe(id clientv3.LeaseID, sub *subscriber) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.leases[id]
	if l == nil {
		return
	}
	i := slices.Index(l.subs, sub)
	if i < 0 {
		return // stopped already, or ended with a lease since gone
	}
	l.subs = slices.Delete(l.subs, i, i+1)
	if len(l.subs) == 0 {
		delete(k.leases, l.id)
		heap.Remove(&k.due, l.index)
	}
}

// end tells l's subscribers it ended and forgets l.
func (k *Keeper) end(l *lease) {
	for _, sub := range l.subs {
		sub.f(0)
	}
	l.subs = nil
	delete(k.leases, l.id)
	heap.Remove(&k.due, l.index)
}

// sendLoop sends the requests that fall due and ends the leases whose
// deadline passes, until the Keeper closes.
func (k *Keeper) sendLoop() {
	defer k.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var ids []int64
	for {
		var s pb.Lease_LeaseKeepAliveClient
		var at int64
		ids, s, at = k.collect(ids[:0])
		for _, id := range ids {
			if err := s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
				k.log.Debug("leasekeeper: send failed", "err", err)
				k.dropStream(s)
				break
			}
		}
		switch {
		case at == 0: // a full batch: more are due
			if k.ctx.Err() != nil {
				return
			}
			continue
		case at > 0: // from now, not from before the sends
			timer.Reset(time.Duration(at - k.now()))
		default:
			timer.Stop()
		}
		select {
		case <-k.ctx.Done():
			return
		case <-k.wake:
		case <-timer.C:
		}
	}
}

// collect ends the leases past their deadline and appends to ids those due
// to be sent on the stream it returns. It returns when the next lease falls
// due, zero if more are due now, or -1 if there is no lease.
func (k *Keeper) collect(ids []int64) ([]int64, pb.Lease_LeaseKeepAliveClient, int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for len(k.due) > 0 {
		l := k.due[0]
		switch {
		case l.at > now:
			return ids, k.stream, l.at
		case l.deadline <= now:
			k.log.Debug("leasekeeper: lease not renewed within its TTL; it may have expired", "lease", int64(l.id))
			k.end(l)
		case k.stream == nil || l.sent != 0:
			// Nothing to do before the deadline: a new stream sends
			// every lease again, an answer reschedules it.
			l.at = l.deadline
			heap.Fix(&k.due, 0)
		case len(ids) == sendBatch:
			return ids, k.stream, 0
		default:
			l.sent, l.at = now, l.deadline
			heap.Fix(&k.due, 0)
			ids = append(ids, int64(l.id))
		}
	}
	return ids, k.stream, -1
}

// recvLoop opens the stream while there are leases, reads its answers and
// reopens it with backoff after an error, until the Keeper closes.
func (k *Keeper) recvLoop() {
	defer k.wg.Done()
	bo := retry.Backoff{Min: reopenMin, Max: reopenMax}
	for k.waitForLeases() {
		// Requiring a leader makes a member that has none fail the stream
		// rather than leave the renewals unanswered.
		ctx, stop := context.WithCancel(clientv3.WithRequireLeader(k.ctx))
		s, err := k.client.LeaseKeepAlive(ctx)
		if err == nil {
			k.setStream(s, stop)
			var answered bool
			answered, err = k.receive(s)
			if answered {
				bo.Reset()
			}
			k.dropStream(s)
		}
		stop()
		if k.ctx.Err() != nil {
			return
		}
		k.log.Warn("leasekeeper: lease keep-alive stream failed; reopening it", "err", err)
		if !retry.Sleep(k.ctx, bo.Next()) {
			return
		}
	}
}

func (k *Keeper) waitForLeases() bool {
	for {
		k.mu.Lock()
		n := len(k.leases)
		k.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-k.need:
		case <-k.ctx.Done():
			return false
		}
	}
}

// setStream makes s the stream and has every lease sent at once on it: the
// requests sent on the stream before were lost with it.
func (k *Keeper) setStream(s pb.Lease_LeaseKeepAliveClient, stop context.CancelFunc) {
	k.mu.Lock()
	k.stream, k.streamStop = s, stop
	now := k.now()
	for _, l := range k.due { // equal keys keep the heap ordered
		l.at, l.sent = now, 0
	}
	k.mu.Unlock()
	signal(k.wake)
}

// dropStream cancels s, if it is still the stream, so that its receiver
// returns and opens another.
func (k *Keeper) dropStream(s pb.Lease_LeaseKeepAliveClient) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stream == s {
		k.stream = nil
		k.streamStop()
	}
}

func (k *Keeper) receive(s pb.Lease_LeaseKeepAliveClient) (answered bool, err error) {
	for {
		resp, err := s.Recv()
		if err != nil {
			return answered, err
		}
		answered = true
		k.answered(clientv3.LeaseID(resp.ID), resp.TTL)
	}
}

// answered records etcd's answer for lease id: its TTL, or <= 0 if gone.
func (k *Keeper) answered(id clientv3.LeaseID, ttl int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.leases[id]
	if l == nil || l.sent == 0 {
		return // stopped, or an answer to an earlier Keep of the id
	}
	if ttl <= 0 {
		k.log.Debug("leasekeeper: lease is gone", "lease", int64(id))
		k.end(l)
		return
	}
	// etcd renewed the lease after the request was sent, so it lives at
	// least ttl from then.
	now, ttlNs := k.now(), ttl*int64(time.Second)
	l.deadline = l.sent + ttlNs
	l.at = min(now+ttlNs/3, l.deadline)
	l.sent = 0
	heap.Fix(&k.due, l.index)
	if l.index == 0 {
		signal(k.wake)
	}
	for _, sub := range l.subs {
		sub.f(ttl)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// dueHeap orders leases by at, earliest first.
type dueHeap []*lease

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	l := x.(*lease)
	l.index = len(*h)
	*h = append(*h, l)
}
func (h *dueHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return l
}
