package apiclient

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// ErrClosed is a Caller's Err after Close.
var ErrClosed = errors.New("apiclient: caller closed")

// Caller is one incarnation of a name, registered through a node's API.
// It is safe for concurrent use.
type Caller struct {
	c    *Client
	name string
	reg  *pb.RegisterResponse

	// Its own KeepAlive stream's, against a node without KeepAliveMany;
	// nil otherwise. Guarded by the Client's keepAlives.mu.
	ownCancel context.CancelFunc
	kaDone    chan struct{} // closed when its keepAlive goroutine returns

	mu   sync.Mutex
	err  error
	done chan struct{}
}

func newCaller(c *Client, name string, reg *pb.RegisterResponse) *Caller {
	cl := &Caller{c: c, name: name, reg: reg, done: make(chan struct{})}
	c.ka.add(cl)
	return cl
}

// keepAlive holds a KeepAlive stream of the caller's own open until ctx
// ends or the incarnation ends, against a node without KeepAliveMany (see
// keepAlives); a broken stream (the node restarting) is opened again,
// which the lease's TTL leaves time for.
func (cl *Caller) keepAlive(ctx context.Context) {
	defer close(cl.kaDone)
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	req := &pb.KeepAliveRequest{Name: cl.name, Incarnation: cl.reg.Incarnation, LeaseId: cl.reg.LeaseId}
	for ctx.Err() == nil {
		stream, err := cl.c.api.KeepAlive(ctx, req)
		for err == nil {
			if _, err = stream.Recv(); err == nil {
				backoff.Reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		if werr := wrap(err); errors.Is(werr, ErrExpired) || errors.Is(werr, ErrSuperseded) || errors.Is(werr, ErrPermissionDenied) {
			cl.finish(werr)
			return
		}
		if !retry.Sleep(ctx, backoff.Next()) {
			return
		}
	}
}

func (cl *Caller) finish(err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.err == nil {
		cl.err = err
		close(cl.done)
	}
}

// Name is the registration name.
func (cl *Caller) Name() string { return cl.name }

// Incarnation is the incarnation token.
func (cl *Caller) Incarnation() int64 { return cl.reg.Incarnation }

// LeaseID is the etcd lease of the registration.
func (cl *Caller) LeaseID() int64 { return cl.reg.LeaseId }

// Done is closed when the incarnation ends (lease lost, superseded) or
// Close is called; Err then says which.
func (cl *Caller) Done() <-chan struct{} { return cl.done }

// Err is nil while the incarnation lives, then why it ended.
func (cl *Caller) Err() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.err
}

// Submit submits ops as one batch. Refusals are *Error matching
// ErrSuperseded, ErrExpired, ErrInvalid and the others. The node
// validates the batch with its limits and writes nothing for bad input.
// The node picks the batch id: a reply lost between etcd and the node is
// settled by the node; one lost between the node and this process is an
// error, and the batch may have been stored.
//
// It goes on the Client's SubmitStream with the submissions of the
// process made at the same moment (see Config.UnarySubmit), or as a
// Submit call of its own when ctx carries a sampled trace span.
func (cl *Caller) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	return cl.submit(ctx, batch)
}

func (cl *Caller) submit(ctx context.Context, batch []ops.Op) (Token, error) {
	req := &pb.SubmitRequest{Name: cl.name, Incarnation: cl.reg.Incarnation, Ops: make([]*pb.Op, 0, len(batch))}
	for _, o := range batch {
		switch o.Kind {
		case ops.KindSet:
			req.Ops = append(req.Ops, &pb.Op{Op: &pb.Op_Set{Set: &pb.SetOp{
				Key: o.Key, Data: &pb.SetOp_Value{Value: o.Value}, ExpirationSeconds: int32(o.Expiration / time.Second),
			}}})
		case ops.KindDelete:
			req.Ops = append(req.Ops, &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Key: o.Key}}})
		}
	}
	var (
		r   *pb.SubmitResponse
		err error
	)
	if cl.c.unary || trace.SpanContextFromContext(ctx).IsSampled() {
		// A traced submission goes as a call of its own, whose spans on
		// the node join the caller's trace.
		r, err = cl.c.api.Submit(ctx, req)
	} else {
		r, err = cl.c.sub.submit(ctx, req)
	}
	if err != nil {
		return tokenseq.Zero, wrap(err)
	}
	return tokenseq.ParseToken(r.Token)
}

// Set submits a set of key to value.
func (cl *Caller) Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error) {
	return cl.Submit(ctx, ops.Set(key, value, expiration))
}

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (cl *Caller) WaitApplied(ctx context.Context, tok Token) error {
	return cl.c.WaitApplied(ctx, tok)
}

// stopKeepAlive stops keeping the lease alive; it returns the channel
// closed once the caller's own KeepAlive goroutine has returned, nil when
// it has none.
func (cl *Caller) stopKeepAlive() <-chan struct{} { return cl.c.ka.remove(cl) }

// Close stops keeping the lease alive and unregisters, which revokes the
// lease: the name is free at once. Accepted operations are still applied
// (G4).
func (cl *Caller) Close(ctx context.Context) error {
	cl.finish(ErrClosed)
	if done := cl.stopKeepAlive(); done != nil {
		<-done
	}
	_, err := cl.c.api.Unregister(ctx, &pb.UnregisterRequest{Name: cl.name, Incarnation: cl.reg.Incarnation, LeaseId: cl.reg.LeaseId})
	if err := wrap(err); err != nil && !errors.Is(err, ErrSuperseded) {
		return err
	}
	return nil
}
