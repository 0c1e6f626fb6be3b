package apiclient

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/retry"
)

// maxKeepAlivesPerMessage bounds the adds, and the removes, of one
// KeepAliveManyRequest: re-adding thousands of callers on a new stream
// goes in several messages of a few tens of KiB rather than one large one.
const maxKeepAlivesPerMessage = 500

// keepAlives keeps the leases of all of a Client's callers alive on one
// KeepAliveMany stream, as etcd's clientv3 keeps all of a client's leases
// on one stream: a process holding thousands of names costs the node one
// stream, not thousands. One goroutine opens the stream and sends on it,
// another receives; it is started by the first Caller and ends at the
// Client's Close. A stream that ends (the connection, the node stopping)
// is opened again, through the next node when the one in use is gone, and
// every caller added to it again, within the leases' TTLs. Against a node
// without KeepAliveMany, each caller gets a KeepAlive stream of its own
// (Caller.keepAlive).
type keepAlives struct {
	c      *Client
	ctx    context.Context // the streams', cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the stream's goroutine and the callers' own

	wake chan struct{} // a change to send, or a retry to schedule

	mu      sync.Mutex
	started bool // the stream's goroutine runs
	own     bool // the node answered KeepAliveMany UNIMPLEMENTED
	closed  bool
	callers map[kaKey]*kaEntry // those kept alive on the stream
	adds    []*kaEntry         // to add on the current stream
	removes []*pb.KeepAliveRequest
	retries retryHeap // ended on the stream, to add again at their time
}

// kaKey names an incarnation on the stream, as the node's answers do.
type kaKey struct {
	name string
	inc  int64
}

// kaEntry is a caller kept alive on the stream.
type kaEntry struct {
	cl  *Caller
	req *pb.KeepAliveRequest

	// Guarded by keepAlives.mu.
	queued   bool           // in adds
	onStream bool           // added on the current stream and not ended
	gone     bool           // closed: skipped wherever it still is
	backoff  *retry.Backoff // its retries since its last renewal; nil when none
	// expires is when the lease runs out unless renewed before, as its
	// registration or last renewal said.
	expires time.Time
}

func newKeepAlives(c *Client) *keepAlives {
	ctx, cancel := context.WithCancel(context.Background())
	return &keepAlives{c: c, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), callers: make(map[kaKey]*kaEntry)}
}

// close ends the stream and the callers' own KeepAlive streams, and waits
// for their goroutines. The callers' leases are left to their TTLs.
func (ka *keepAlives) close() {
	ka.mu.Lock()
	ka.closed = true
	ka.mu.Unlock()
	ka.cancel()
	ka.wg.Wait()
}

// add starts keeping cl's lease alive.
func (ka *keepAlives) add(cl *Caller) {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	switch {
	case ka.closed:
		return
	case ka.own:
		ka.startOwnLocked(cl)
		return
	}
	e := &kaEntry{
		cl:      cl,
		req:     &pb.KeepAliveRequest{Name: cl.name, Incarnation: cl.reg.Incarnation, LeaseId: cl.reg.LeaseId},
		expires: time.Now().Add(time.Duration(cl.reg.TtlSeconds) * time.Second),
	}
	ka.callers[kaKey{cl.name, cl.reg.Incarnation}] = e
	if ka.started {
		// A stream being opened adds every caller it finds; one open
		// takes this one in its next message.
		e.queued = true
		ka.adds = append(ka.adds, e)
		ka.signal()
		return
	}
	ka.started = true
	ka.wg.Add(1)
	go ka.run()
}

// remove stops keeping cl's lease alive. It returns the channel closed
// when cl's own KeepAlive goroutine has returned, nil when it has none.
func (ka *keepAlives) remove(cl *Caller) <-chan struct{} {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	if cl.ownCancel != nil {
		cl.ownCancel()
		return cl.kaDone
	}
	k := kaKey{cl.name, cl.reg.Incarnation}
	e := ka.callers[k]
	if e == nil || e.cl != cl {
		return nil
	}
	delete(ka.callers, k)
	e.gone = true
	if e.onStream {
		// No answer comes: the node only stops renewing the lease, which
		// Unregister then revokes.
		e.onStream = false
		ka.removes = append(ka.removes, e.req)
		ka.signal()
	}
	return nil
}

// startOwnLocked starts cl's own KeepAlive stream, for a node without
// KeepAliveMany; it ends with the Client.
func (ka *keepAlives) startOwnLocked(cl *Caller) {
	ctx, cancel := context.WithCancel(ka.ctx)
	cl.ownCancel, cl.kaDone = cancel, make(chan struct{})
	ka.wg.Add(1)
	go func() {
		defer ka.wg.Done()
		cl.keepAlive(ctx)
	}()
}

// signal wakes the stream's goroutine.
func (ka *keepAlives) signal() {
	select {
	case ka.wake <- struct{}{}:
	default:
	}
}

// run keeps a stream open until the Client closes, or until the node
// answers that it has no KeepAliveMany.
func (ka *keepAlives) run() {
	defer ka.wg.Done()
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		var answered atomic.Bool
		err := ka.stream(&answered)
		if ka.ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			ka.fallBack()
			return
		}
		if answered.Load() {
			backoff.Reset()
		}
		if !retry.Sleep(ka.ctx, backoff.Next()) {
			return
		}
	}
}

// fallBack gives every caller, current and future, a KeepAlive stream of
// its own.
func (ka *keepAlives) fallBack() {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	ka.own = true
	for k, e := range ka.callers {
		delete(ka.callers, k)
		if !ka.closed {
			ka.startOwnLocked(e.cl)
		}
	}
	ka.adds, ka.removes, ka.retries = nil, nil, nil
}

// stream opens a stream, adds every caller to it, and sends the changes
// until it ends; it returns why it ended. answered is set once the node
// answers on it.
func (ka *keepAlives) stream(answered *atomic.Bool) error {
	ctx, cancel := context.WithCancel(ka.ctx)
	defer cancel()
	stream, err := ka.c.api.KeepAliveMany(ctx)
	if err != nil {
		return err
	}
	ka.mu.Lock()
	// Every caller goes on the new stream, those waiting for a retry too:
	// the stream is new, and perhaps on another node. The leases closest
	// to running out go first: a node checks a stream's adds one after
	// the other, and thousands of them take it a while.
	ka.adds, ka.removes, ka.retries = ka.adds[:0], nil, nil
	for _, e := range ka.callers {
		e.onStream, e.queued = false, true
		ka.adds = append(ka.adds, e)
	}
	slices.SortFunc(ka.adds, func(a, b *kaEntry) int { return a.expires.Compare(b.expires) })
	ka.mu.Unlock()

	received := make(chan error, 1)
	go func() { received <- ka.receive(stream, answered) }()
	// Reset for the next retry; Stop and Reset leave no stale tick in
	// timer.C.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		ka.mu.Lock()
		req := ka.nextLocked(time.Now())
		wait, retrying := ka.retries.next()
		ka.mu.Unlock()
		if req != nil {
			if err := stream.Send(req); err != nil {
				// The stream is over; Recv says why.
				return <-received
			}
			continue
		}
		if retrying {
			timer.Reset(max(0, time.Until(wait)))
		}
		select {
		case err := <-received:
			return err
		case <-ka.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// nextLocked returns the next message to send, nil when there is
// nothing to send; callers whose retry is due at now are added again.
func (ka *keepAlives) nextLocked(now time.Time) *pb.KeepAliveManyRequest {
	for len(ka.retries) > 0 && !ka.retries[0].at.After(now) {
		e := heap.Pop(&ka.retries).(retryAt).e
		if !e.gone && !e.queued && !e.onStream {
			e.queued = true
			ka.adds = append(ka.adds, e)
		}
	}
	var req *pb.KeepAliveManyRequest
	n := 0
	for n < len(ka.adds) {
		e := ka.adds[n]
		n++
		e.queued = false
		if e.gone {
			continue
		}
		if req == nil {
			req = &pb.KeepAliveManyRequest{}
		}
		e.onStream = true
		req.Add = append(req.Add, e.req)
		if len(req.Add) == maxKeepAlivesPerMessage {
			break
		}
	}
	ka.adds = ka.adds[:copy(ka.adds, ka.adds[n:])]
	if len(ka.adds) == 0 {
		ka.adds = nil // let a large queue's array go
	}
	if len(ka.removes) > 0 {
		if req == nil {
			req = &pb.KeepAliveManyRequest{}
		}
		n := min(len(ka.removes), maxKeepAlivesPerMessage)
		req.Remove = append(req.Remove, ka.removes[:n]...)
		ka.removes = ka.removes[n:]
		if len(ka.removes) == 0 {
			ka.removes = nil
		}
	}
	return req
}

// receive reads the stream's answers until it ends, and returns why it
// ended. A caller whose incarnation is over (superseded, expired, not its
// name's to keep) ends with the error; one ended for any other reason (its
// renewals lapsed while it is still registered, a limit, a refused add)
// is added again after its backoff, as its own KeepAlive stream would be
// opened again.
func (ka *keepAlives) receive(stream pb.Coordinator_KeepAliveManyClient, answered *atomic.Bool) error {
	type final struct {
		cl  *Caller
		err error
	}
	var finals []final
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		answered.Store(true)
		now, retried := time.Now(), false
		ka.mu.Lock()
		for _, r := range resp.GetRenewed() {
			if e := ka.callers[kaKey{r.GetName(), r.GetIncarnation()}]; e != nil {
				e.backoff = nil
				e.expires = now.Add(time.Duration(r.GetTtlSeconds()) * time.Second)
			}
		}
		for _, r := range resp.GetEnded() {
			k := kaKey{r.GetName(), r.GetIncarnation()}
			e := ka.callers[k]
			if e == nil || !e.onStream {
				continue // closed, or not on this stream: not ours to act on
			}
			e.onStream = false
			werr := wrap(statusError(r.GetError()))
			if errors.Is(werr, ErrExpired) || errors.Is(werr, ErrSuperseded) || errors.Is(werr, ErrPermissionDenied) {
				delete(ka.callers, k)
				e.gone = true
				finals = append(finals, final{e.cl, werr})
				continue
			}
			if e.backoff == nil {
				e.backoff = &retry.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
			}
			heap.Push(&ka.retries, retryAt{at: now.Add(max(e.backoff.Next(), retryAfter(werr))), e: e})
			retried = true
		}
		ka.mu.Unlock()
		if retried {
			ka.signal()
		}
		for i, f := range finals {
			f.cl.finish(f.err)
			finals[i] = final{}
		}
		finals = finals[:0]
	}
}

// retryAfter is the wait a node's limit asked for with its refusal
// (RESOURCE_EXHAUSTED's retry_after_ms), zero when none.
func retryAfter(err error) time.Duration {
	var e *Error
	if !errors.As(err, &e) {
		return 0
	}
	ms, perr := strconv.ParseInt(e.Meta("retry_after_ms"), 10, 64)
	if perr != nil || ms < 0 {
		return 0
	}
	return time.Duration(min(ms, int64(time.Minute/time.Millisecond))) * time.Millisecond
}

// retryAt is a caller to add again at a time.
type retryAt struct {
	at time.Time
	e  *kaEntry
}

// retryHeap orders the retries by time, earliest first; its methods are
// container/heap's Interface, for heap.Push and heap.Pop.
type retryHeap []retryAt

// Len is the number of retries.
func (h retryHeap) Len() int { return len(h) }

// Less orders retries by time.
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }

// Swap swaps two retries.
func (h retryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

// Push appends x, a retryAt.
func (h *retryHeap) Push(x any) { *h = append(*h, x.(retryAt)) }

// Pop removes the last retry, dropping its reference to the entry.
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = retryAt{}
	*h = old[:len(old)-1]
	return x
}

// next is the time of the first retry, if any.
func (h retryHeap) next() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].at, true
}
