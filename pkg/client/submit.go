package client

import (
	"context"
	"errors"
	"time"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Set submits a set of key to value with the given expiration (zero: none).
func (s *Session) Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error) {
	return s.Submit(ctx, ops.Set(key, value, expiration))
}

// Delete submits a delete of key.
func (s *Session) Delete(ctx context.Context, key string) (Token, error) {
	return s.Submit(ctx, ops.Delete(key))
}

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (s *Session) WaitApplied(ctx context.Context, tok Token) error {
	return s.c.WaitApplied(ctx, tok)
}

// Submit submits ops as one batch under the current incarnation and returns
// its token. While a re-registration is under way it first waits for it,
// or returns ctx.Err() when ctx ends. A batch refused because the
// incarnation expired is resent under the next one (unless
// SessionConfig.NoRetry). It returns an error wrapping ErrSessionSuperseded
// once the name belongs to another process, ErrInvalid for bad input, and
// an *UnknownOutcomeError when the reply was lost and no lookup could
// settle whether the batch was accepted; such a batch is never resent
// blindly.
func (s *Session) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	if err := ops.ValidateBatch(batch, s.c.sub.Limits()); err != nil {
		return tokenseq.Zero, err
	}
	sub := &submission{s: s, batch: batch, id: tokenseq.NewBatchID()}
	return sub.run(ctx)
}

// submission is one call of Session.Submit: its batch, under an id that
// changes only once a lookup proved the previous one not accepted.
type submission struct {
	s     *Session
	batch []ops.Op
	id    string
}

// run sends the batch until it is accepted or an error is final.
func (sub *submission) run(ctx context.Context) (Token, error) {
	s := sub.s
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		inc, err := s.acquire(ctx)
		if err != nil {
			return tokenseq.Zero, err
		}
		req := tokenseq.Request{Name: s.name, Incarnation: inc.Incarnation, ID: sub.id, Ops: sub.batch}
		if s.receipts != nil {
			req.Lease = inc.LeaseID
		}
		tok, err := sub.send(ctx, req)
		if err == nil {
			return sub.accepted(req, tok), nil
		}
		if final := sub.refused(req, err); final != nil {
			return tokenseq.Zero, final
		}
		switch {
		case errors.As(err, new(*tokenseq.RefusedError)):
			// Refused under a dead incarnation: resend under the next.
		case errors.Is(err, tokenseq.ErrVoided):
			// A lookup settled this id as not accepted: send a new one.
			sub.id = tokenseq.NewBatchID()
		case !tokenseq.IsOutcomeUnknown(err):
			return tokenseq.Zero, err
		default:
			// The reply was lost: the batch may have been accepted.
			tok, lerr := sub.settle(ctx, req, err)
			if lerr == nil {
				return sub.accepted(req, tok), nil
			}
			if !errors.Is(lerr, ErrNotAccepted) {
				return tokenseq.Zero, lerr
			}
			// Not accepted, and the lookup made sure it never will be.
			sub.id = tokenseq.NewBatchID()
			if !retry.Sleep(ctx, backoff.Next()) {
				return tokenseq.Zero, ctx.Err()
			}
		}
		s.stats.retries.Add(1)
	}
}

// refused handles the error of a send that may be a refusal. It returns
// the error Submit returns, or nil when the submission goes on: bad input
// is returned; a refusal as expired, or as superseded by this session's own
// newer incarnation, counts as expired and is resent unless NoRetry; a
// refusal as superseded by another process is final, as is a refusal by
// etcd's access control.
func (sub *submission) refused(req tokenseq.Request, err error) error {
	s := sub.s
	var refused *tokenseq.RefusedError
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrInvalidName):
		return err
	case errors.Is(err, ErrPermissionDenied):
		// Refused before anything was stored, and for good.
		return denied(req.Name, err)
	case !errors.As(err, &refused):
		return nil
	case errors.Is(err, ErrExpired):
		s.stats.expired.Add(1)
		s.expired(req.Incarnation, err)
	default:
		if final := s.refusedSuperseded(req.Incarnation, refused); final != nil {
			return final
		}
		// Refused because this session's own newer incarnation had
		// already replaced the dead one it was sent under.
		s.stats.expired.Add(1)
	}
	if s.cfg.NoRetry {
		return err
	}
	return nil
}

// send runs the submission transaction of req, through the test hook when
// one is set.
func (sub *submission) send(ctx context.Context, req tokenseq.Request) (Token, error) {
	s := sub.s
	submit := func() (Token, error) { return s.c.sub.SubmitRequest(ctx, req) }
	if s.hooks.send != nil {
		return s.hooks.send(ctx, req, submit)
	}
	return submit()
}

// accepted counts an accepted submission and hands its receipt to the
// pruner.
func (sub *submission) accepted(req tokenseq.Request, tok Token) Token {
	s := sub.s
	s.stats.accepted.Add(1)
	if req.Lease != 0 && s.receipts != nil {
		s.receipts.offer(receipt{inc: req.Incarnation, id: req.ID})
	}
	return tok
}

// settle looks up a submission whose reply was lost (tokenseq's one
// settle protocol).
func (sub *submission) settle(ctx context.Context, req tokenseq.Request, cause error) (Token, error) {
	return sub.s.c.sub.Settle(ctx, req, cause, &sub.s.stats.lookups)
}

// Resolve settles a submission that failed with an *UnknownOutcomeError:
// it returns the batch's token when it was accepted, an error wrapping
// ErrNotAccepted when it was not (and never will be), and one wrapping
// ErrOutcomeUnknown when nothing left in etcd can tell.
func (s *Session) Resolve(ctx context.Context, u *UnknownOutcomeError) (Token, error) {
	s.stats.lookups.Add(1)
	return s.c.sub.Lookup(ctx, u.Request())
}
