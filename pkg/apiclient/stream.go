package apiclient

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
)

// streamer sends a Client's submissions on a SubmitStream, one open at a
// time and shared by all of the Client's callers: submissions made while
// another is being sent go together in the next message, and the node
// answers those settled together in one message. A stream that ends
// (the connection, the node stopping or ageing the connection out) is
// replaced by a new one at the next submission; a node without
// SubmitStream gets Submit calls.
type streamer struct {
	c *Client

	mu      sync.Mutex
	cur     *submitStream // nil when none is open
	opening *opening      // the stream being opened; nil when none is
	unary   bool          // the node answered SubmitStream UNIMPLEMENTED
	closed  bool
	ctx     context.Context // the streams', cancelled by close
	cancel  context.CancelFunc
}

// opening is a stream being opened: done is closed once it is open, or
// once opening it failed with err.
type opening struct {
	done chan struct{}
	err  error
}

func newStreamer(c *Client) *streamer {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamer{c: c, ctx: ctx, cancel: cancel}
}

// close ends the stream; submissions waiting for their answer fail.
func (s *streamer) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
}

// errUnary means the node has no SubmitStream: use Submit.
var errUnary = errors.New("apiclient: the node has no SubmitStream")

// stream returns the open stream, opening one when none is, or waits
// for the one being opened; it gives up when ctx ends. A failed opening
// fails the submissions waiting for it, as their Submit calls would have.
func (s *streamer) stream(ctx context.Context) (*submitStream, error) {
	s.mu.Lock()
	switch {
	case s.unary:
		s.mu.Unlock()
		return nil, errUnary
	case s.cur != nil:
		st := s.cur
		s.mu.Unlock()
		return st, nil
	case s.closed:
		s.mu.Unlock()
		return nil, status.Error(codes.Canceled, "apiclient: client closed")
	}
	o := s.opening
	if o == nil {
		o = &opening{done: make(chan struct{})}
		s.opening = o
		go s.open(o)
	}
	s.mu.Unlock()
	select {
	case <-o.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if o.err != nil {
		return nil, o.err
	}
	return nil, errAgain
}

// errAgain means a stream was opened: ask for it again.
var errAgain = errors.New("apiclient: stream opened")

// open opens a stream for o.
func (s *streamer) open(o *opening) {
	ctx, cancel := context.WithCancel(s.ctx)
	stream, err := s.c.api.SubmitStream(ctx)
	s.mu.Lock()
	if err == nil {
		st := &submitStream{s: s, stream: stream, cancel: cancel, pending: make(map[uint64]*attempt)}
		s.cur = st
		go st.receive()
	} else {
		cancel()
	}
	o.err = err
	s.opening = nil
	s.mu.Unlock()
	close(o.done)
}

// ended forgets st, which has ended with err.
func (s *streamer) ended(st *submitStream, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == st {
		s.cur = nil
	}
	if status.Code(err) == codes.Unimplemented {
		s.unary = true
	}
}

// submit submits req on the stream and waits for its answer: the response,
// or the error a Submit call would have returned. A submission the stream
// ended without reading goes on the next stream.
func (s *streamer) submit(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	var timeout uint32
	if d, ok := ctx.Deadline(); ok {
		// The node stops working on it when the caller stops waiting, as
		// a Submit call's deadline makes it.
		timeout = uint32(max(1, min(time.Until(d).Milliseconds()+1, int64(^uint32(0)))))
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		st, err := s.stream(ctx)
		switch {
		case errors.Is(err, errUnary):
			return s.c.api.Submit(ctx, req)
		case errors.Is(err, errAgain):
			continue
		case err != nil:
			return nil, err
		}
		a := &attempt{sub: &pb.StreamSubmission{Submit: req, TimeoutMs: timeout}, done: make(chan struct{})}
		if !st.send(a) {
			continue // it has ended: the next one
		}
		select {
		case <-a.done:
			if a.again {
				continue
			}
			return a.resp, a.err
		case <-ctx.Done():
			st.forget(a)
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// attempt is one submission on one stream.
type attempt struct {
	sub  *pb.StreamSubmission
	done chan struct{} // closed once answered, or once the stream ended
	msg  *message      // the message it went in; nil while queued
	gone bool          // its caller stopped waiting

	// Set before done is closed.
	resp  *pb.SubmitResponse
	err   error
	again bool // not read by the node: send it on the next stream
}

// message is a message sent on a stream, in flight until each of its
// submissions is answered.
type message struct{ unanswered int }

// maxMessagesInFlight bounds the messages of a stream in flight at once.
// As in tokenseq's group commit: while one is in flight, the next waits
// until as many submissions are queued as the last message carried (or
// the one in flight is answered), so that callers waiting for their
// answers share a few messages rather than send one each.
const maxMessagesInFlight = 2

// submitStream is one open SubmitStream.
type submitStream struct {
	s      *streamer
	stream pb.Coordinator_SubmitStreamClient
	cancel context.CancelFunc

	mu       sync.Mutex
	next     uint64              // the last request id given
	pending  map[uint64]*attempt // unanswered, sent or queued
	queue    []*attempt          // not sent yet
	inflight int                 // messages in flight
	last     int                 // submissions in the message sent last
	sending  bool                // a goroutine is sending (or about to)
	ended    bool
	msg      pb.SubmitStreamRequest // the message being sent, reused
}

// send queues a and sends the queue when the stream may take another
// message; it returns false when the stream has ended.
func (st *submitStream) send(a *attempt) bool {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return false
	}
	st.next++
	a.sub.RequestId = st.next
	st.pending[st.next] = a
	st.queue = append(st.queue, a)
	if !st.sending && st.inflight < maxMessagesInFlight {
		// Callers answered together (one message answers several) are
		// about to submit again: let them queue before the message goes.
		st.sending = true
		st.mu.Unlock()
		runtime.Gosched()
		st.mu.Lock()
		st.sending = false
	}
	st.flushLocked()
	st.mu.Unlock()
	return true
}

// flushLocked sends queued submissions while the stream may take another
// message, unless another goroutine is sending. It unlocks st.mu while it
// sends.
func (st *submitStream) flushLocked() {
	for !st.sending && !st.ended && len(st.queue) > 0 && st.inflight < maxMessagesInFlight &&
		(st.inflight == 0 || len(st.queue) >= st.last) {
		m := &message{unanswered: len(st.queue)}
		for _, x := range st.queue {
			x.msg = m
			st.msg.Submissions = append(st.msg.Submissions, x.sub)
		}
		clear(st.queue)
		st.queue = st.queue[:0]
		st.inflight++
		st.last = m.unanswered
		st.sending = true
		st.mu.Unlock()
		err := st.stream.Send(&st.msg)
		st.mu.Lock()
		clear(st.msg.Submissions)
		st.msg.Submissions = st.msg.Submissions[:0]
		st.sending = false
		if err != nil {
			// The stream is over; its receiver learns why and settles
			// every submission left.
			return
		}
	}
}

// answeredLocked counts an answer of a's message.
func (st *submitStream) answeredLocked(a *attempt) {
	if a.msg != nil {
		if a.msg.unanswered--; a.msg.unanswered == 0 {
			st.inflight--
		}
	}
}

// forget drops a, whose caller stopped waiting.
func (st *submitStream) forget(a *attempt) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if a.msg != nil {
		a.gone = true // its answer still counts for its message
		return
	}
	delete(st.pending, a.sub.RequestId)
	for i, x := range st.queue {
		if x == a {
			st.queue = append(st.queue[:i], st.queue[i+1:]...)
			break
		}
	}
}

// receive hands the answers to their submissions until the stream ends,
// then settles the submissions left.
func (st *submitStream) receive() {
	for {
		resp, err := st.stream.Recv()
		if err != nil {
			st.end(err)
			return
		}
		st.mu.Lock()
		inflight, woken := st.inflight, false
		for _, r := range resp.GetResults() {
			a := st.pending[r.GetRequestId()]
			if a == nil || a.msg == nil {
				continue // not one of ours: ignored
			}
			delete(st.pending, r.GetRequestId())
			st.answeredLocked(a)
			if a.gone {
				continue
			}
			if e := r.GetError(); e != nil {
				a.err = statusError(e)
			} else {
				a.resp = r.GetSubmitted()
			}
			close(a.done)
			woken = true
		}
		if woken && st.inflight < inflight && !st.sending {
			// The callers just answered are about to submit again: let
			// them queue, and send what they queued in one message.
			st.sending = true
			st.mu.Unlock()
			runtime.Gosched()
			st.mu.Lock()
			st.sending = false
		}
		st.flushLocked()
		st.mu.Unlock()
	}
}

// end settles the submissions left on the stream, which ended with err.
// When the node ended it OK, or has no SubmitStream, it read none of them:
// they go on the next stream (or as Submit calls). Otherwise those sent
// get err, their outcome unknown, and the others go on the next stream.
func (st *submitStream) end(err error) {
	st.s.ended(st, err)
	again := errors.Is(err, io.EOF) || status.Code(err) == codes.Unimplemented
	st.mu.Lock()
	st.ended = true
	for id, a := range st.pending {
		delete(st.pending, id)
		if a.gone {
			continue
		}
		if again || a.msg == nil {
			a.again = true
		} else {
			a.err = err
		}
		close(a.done)
	}
	st.queue = nil
	st.mu.Unlock()
	st.cancel()
}

// statusError is the gRPC error of a stream result's status.
func statusError(e *pb.ErrorStatus) error {
	st := &spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: make([]*anypb.Any, len(e.GetDetails()))}
	for i, d := range e.GetDetails() {
		st.Details[i] = &anypb.Any{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()}
	}
	return status.ErrorProto(st)
}
