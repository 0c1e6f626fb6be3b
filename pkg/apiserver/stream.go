package apiserver

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// MaxStreamPending bounds the submissions of one SubmitStream that the
// node has read and not answered yet: past it, the node reads no more of
// the stream until it has answered some, which holds back a caller that
// sends faster than it reads its answers.
const MaxStreamPending = 1024

// SubmitStream serves submissions pipelined on one stream; see the proto.
// Each submission goes through submit, as a Submit call does, under the
// stream's caller identity, on a goroutine of its own; the answers are
// sent by one goroutine, as many to a response as are ready. When the
// caller closes its side, the node stops or the connection is past
// Config.MaxConnectionAge, it submits nothing more, and ends the stream
// OK once every submission it started is answered: a submission left
// unanswered was not submitted.
func (s *Server) SubmitStream(stream pb.Coordinator_SubmitStreamServer) error {
	if s.isStopping() {
		return apierr.New(apierr.ReasonUnavailable, "node is stopping", nil)
	}
	closed, err := s.lim.openStream()
	if err != nil {
		return err
	}
	defer closed()
	ctx := stream.Context()
	identity := callerIdentity(ctx)

	// Every submission read holds a slot until its answer is sent.
	slots := make(chan struct{}, MaxStreamPending)
	results := make(chan *pb.StreamResult, MaxStreamPending)
	sent := make(chan error, 1)
	go func() { sent <- sendResults(stream, results, slots) }()

	reqs := make(chan *pb.SubmitStreamRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var aging <-chan time.Time // fires once the connection is past its age
	if born, ok := ctx.Value(connBornKey{}).(time.Time); ok {
		t := time.NewTimer(time.Until(born.Add(s.cfg.MaxConnectionAge)))
		defer t.Stop()
		aging = t.C
	}
	var (
		wg  sync.WaitGroup // submissions under way
		end error          // nil: the stream ends OK once every answer is sent
	)
read:
	for {
		select {
		case req := <-reqs:
			var (
				bounds deadlines
				stop   bool
			)
			for _, sub := range req.GetSubmissions() {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					end, stop = ctx.Err(), true
				case <-s.stopping:
					// The rest of the message is not submitted: the
					// caller sends it again, as what was not read.
					stop = true
				}
				if stop {
					break
				}
				d := bounds.of(ctx, s.timeoutOf(sub))
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer d.done()
					results <- s.streamSubmission(d.ctx, identity, sub)
				}()
			}
			bounds.release()
			if stop {
				break read
			}
		case <-aging:
			// As an old connection's calls end: the caller opens a new
			// stream, on a new connection.
			break read
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				end = err
			}
			break read
		case <-s.stopping:
			break read
		}
	}
	wg.Wait()
	close(results)
	if err := <-sent; err != nil {
		return err
	}
	return end
}

// timeoutOf is what bounds a submission of a stream, as a Submit call is
// bounded: its timeout_ms, and Config.WriteTimeout.
func (s *Server) timeoutOf(sub *pb.StreamSubmission) time.Duration {
	timeout := s.cfg.WriteTimeout
	if ms := sub.GetTimeoutMs(); ms > 0 {
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	return timeout
}

// deadlines are the deadlines of one message's submissions: those bounded
// alike share one context, one timer for a message rather than one for
// each submission.
type deadlines []*deadline

// deadline is a context that ends timeout after the message was read, or
// once every submission using it is done.
type deadline struct {
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
	users   atomic.Int32 // submissions using it, and the message until release
}

// of returns the deadline of a submission bounded by timeout; the
// submission calls its done when it is.
func (ds *deadlines) of(parent context.Context, timeout time.Duration) *deadline {
	for _, d := range *ds {
		if d.timeout == timeout {
			d.users.Add(1)
			return d
		}
	}
	d := &deadline{timeout: timeout}
	d.ctx, d.cancel = context.WithTimeout(parent, timeout)
	d.users.Store(2) // the submission's, and the message's until release
	*ds = append(*ds, d)
	return d
}

// done ends the use of d by one submission, or by the message.
func (d *deadline) done() {
	if d.users.Add(-1) == 0 {
		d.cancel()
	}
}

// release ends the message's use of its deadlines, once every submission
// of it has started.
func (ds deadlines) release() {
	for _, d := range ds {
		d.done()
	}
}

// streamSubmission submits one submission of a stream under ctx, its
// deadline, and returns its answer.
func (s *Server) streamSubmission(ctx context.Context, identity string, sub *pb.StreamSubmission) *pb.StreamResult {
	res := &pb.StreamResult{RequestId: sub.GetRequestId()}
	resp, err := s.submit(ctx, identity, sub.GetSubmit())
	if err != nil {
		res.Error = errorStatus(err)
	} else {
		res.Submitted = resp
	}
	return res
}

// errorStatus is the google.rpc.Status of err, as a Submit call would end
// with it, in the stream's message.
func errorStatus(err error) *pb.ErrorStatus {
	st := status.Convert(err).Proto()
	out := &pb.ErrorStatus{Code: st.GetCode(), Message: st.GetMessage(), Details: make([]*pb.ErrorDetail, len(st.GetDetails()))}
	for i, d := range st.GetDetails() {
		out.Details[i] = &pb.ErrorDetail{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()}
	}
	return out
}

// sendResults sends the answers of results as they come, all those ready
// in one response, releasing a slot for each, until results is closed.
// After a failed send it goes on releasing slots, and returns the error.
func sendResults(stream pb.Coordinator_SubmitStreamServer, results <-chan *pb.StreamResult, slots <-chan struct{}) error {
	var (
		err  error
		resp pb.SubmitStreamResponse
	)
	for r := range results {
		// The other submissions the same transaction settled are about
		// to be answered: yield while more come, for one response.
		resp.Results = append(resp.Results[:0], r)
	more:
		for len(resp.Results) < MaxStreamPending {
			runtime.Gosched()
			n := len(results)
			if n == 0 {
				break
			}
			for range min(n, MaxStreamPending-len(resp.Results)) {
				r, ok := <-results
				if !ok {
					break more
				}
				resp.Results = append(resp.Results, r)
			}
		}
		if err == nil {
			err = stream.Send(&resp)
		}
		for range resp.Results {
			<-slots
		}
		clear(resp.Results)
	}
	return err
}
