package apiclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// ErrSessionClosed is returned by a Session's methods after Close.
var ErrSessionClosed = errors.New("apiclient: session closed")

// SessionConfig configures NewSession. Zero values mean the defaults noted.
type SessionConfig struct {
	// Register is each incarnation's registration config.
	Register RegisterConfig
}

// Validate checks the config; its errors are *config.FieldError.
func (c *SessionConfig) Validate() error { return c.Register.Validate() }

// Session owns a name's registration for the whole process: when the lease
// is lost it registers once more, however many calls fail at that moment,
// and resends their batches under the new incarnation (G9). A session
// superseded by another process stops: that error is final. Share one
// session between all of the process's goroutines.
type Session struct {
	c    *Client
	name string
	cfg  SessionConfig

	renewals atomic.Int64

	mu       sync.Mutex
	cur      *Caller
	renewing chan struct{} // closed when the renewal under way ends; nil when none
	final    error         // superseded by another process, or closed
}

// NewSession registers name and returns its session.
func (c *Client) NewSession(ctx context.Context, name string, cfg SessionConfig) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := c.Register(ctx, name, cfg.Register)
	if err != nil {
		return nil, err
	}
	return &Session{c: c, name: name, cfg: cfg, cur: cl}, nil
}

// Incarnation is the current incarnation.
func (s *Session) Incarnation() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Incarnation()
}

// Renewals counts the re-registrations made after a lost lease.
func (s *Session) Renewals() int64 { return s.renewals.Load() }

// acquire returns the current caller, waiting for a renewal under way.
func (s *Session) acquire(ctx context.Context) (*Caller, error) {
	for {
		s.mu.Lock()
		if s.final != nil {
			s.mu.Unlock()
			return nil, s.final
		}
		wait := s.renewing
		cur := s.cur
		s.mu.Unlock()
		if wait == nil {
			return cur, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// renew registers again unless the incarnation inc has already been
// replaced; the first call after a loss registers, the others wait for it.
func (s *Session) renew(ctx context.Context, inc int64) error {
	s.mu.Lock()
	if s.final != nil {
		s.mu.Unlock()
		return s.final
	}
	if s.cur.Incarnation() != inc || s.renewing != nil {
		s.mu.Unlock()
		return nil // replaced already, or being replaced: acquire waits
	}
	done := make(chan struct{})
	s.renewing = done
	old := s.cur
	s.mu.Unlock()

	// A re-registration never supersedes: a live holder of the name is
	// another process, and the session ends superseded (as pkg/client's).
	cfg := s.cfg.Register
	cfg.IfAbsent = true
	cl, err := s.c.Register(ctx, s.name, cfg)
	s.mu.Lock()
	s.renewing = nil
	if err == nil {
		s.cur = cl
		s.renewals.Add(1)
	} else if errors.Is(err, ErrNameHeld) && s.final == nil {
		s.final = fmt.Errorf("apiclient: session of %q superseded by another process: %w: %w", s.name, ErrSuperseded, err)
		err = s.final
	}
	s.mu.Unlock()
	close(done)
	if err == nil {
		old.finish(ErrExpired)
		old.stopKeepAlive()
	}
	return err
}

// Submit submits ops as one batch under the current incarnation; a batch
// refused because the incarnation expired is sent again by the next one.
func (s *Session) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	for {
		cl, err := s.acquire(ctx)
		if err != nil {
			return tokenseq.Zero, err
		}
		tok, err := cl.submit(ctx, batch)
		var e *Error
		switch {
		case err == nil:
			return tok, nil
		case errors.Is(err, ErrExpired):
			if err := s.renew(ctx, cl.Incarnation()); err != nil {
				return tokenseq.Zero, err
			}
		case errors.Is(err, ErrSuperseded) && errors.As(err, &e) && s.ownIncarnation(e.Current()):
			// Refused because this session's own newer incarnation had
			// replaced the one it was sent under: go again under that one.
		case errors.Is(err, ErrSuperseded):
			s.mu.Lock()
			if s.final == nil {
				s.final = fmt.Errorf("apiclient: session of %q superseded by another process: %w", s.name, err)
			}
			final := s.final
			s.mu.Unlock()
			return tokenseq.Zero, final
		default:
			return tokenseq.Zero, err
		}
	}
}

// ownIncarnation reports whether inc is the session's current incarnation.
func (s *Session) ownIncarnation(inc int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return inc != 0 && s.cur.Incarnation() == inc
}

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (s *Session) WaitApplied(ctx context.Context, tok Token) error { return s.c.WaitApplied(ctx, tok) }

// Close unregisters the current incarnation.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.final == nil {
		s.final = ErrSessionClosed
	}
	cur := s.cur
	s.mu.Unlock()
	return cur.Close(ctx)
}
