package client

import "github.com/coordinator-dev/coordinator/pkg/tokenseq"

// action is what a submission refused under its cookie does next.
type action uint8

const (
	// actRetry: a newer incarnation is current; resend under it at once.
	actRetry action = iota + 1
	// actWait: a re-registration is under way; wait for it.
	actWait
	// actRenew: the cookie is the current incarnation and it is dead;
	// re-register.
	actRenew
	// actFail: the session has ended; return its error.
	actFail
)

// compareCookie is the cookie check of G9. A submission refused as expired
// under incarnation cookie asks what to do, given the session's current
// incarnation, whether a re-registration of it is under way and whether the
// session has failed. Only a cookie equal to the current incarnation, with
// no re-registration under way, may re-register: a submission arriving with
// an older cookie retries under the newer incarnation and leaves it be.
func compareCookie(cookie, current int64, renewing, failed bool) action {
	switch {
	case failed:
		return actFail
	case renewing:
		return actWait
	case cookie != current:
		return actRetry
	}
	return actRenew
}

// compareLocked is compareCookie against the session's state. s.mu is held.
func (s *Session) compareLocked(cookie int64) action {
	return compareCookie(cookie, s.inc.Incarnation, s.renewing != nil, s.failed != nil)
}

// expired handles a submission refused as expired under cookie: under the
// session's lock it compares the cookie with the current incarnation and
// starts the one re-registration when they match. It returns what the
// compare decided (actRenew when this call started the re-registration).
func (s *Session) expired(cookie int64, cause error) action {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.compareLocked(cookie)
	if a == actRenew {
		s.startRenewLocked(cause)
	}
	return a
}

// refusedSuperseded handles a submission refused as superseded under
// cookie. A newer incarnation of this session (a stale cookie, or a
// re-registration under way) means resend; otherwise another process holds
// the name and the session fails. It returns the final error, or nil to
// resend.
func (s *Session) refusedSuperseded(cookie int64, refused *tokenseq.RefusedError) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.compareLocked(cookie) {
	case actFail:
		return s.failed
	case actRetry, actWait:
		return nil
	}
	s.failLocked(supersededError(s.name, cookie, refused.Current))
	return s.failed
}
