package client

import "sync/atomic"

// SessionStats are a session's counters since NewSession.
type SessionStats struct {
	// Registrations counts incarnations registered, the first included.
	Registrations uint64
	// Renewals counts re-registrations after a lost lease.
	Renewals uint64
	// Accepted counts submissions that returned a token.
	Accepted uint64
	// Expired counts submissions refused because they were sent under a
	// dead incarnation (sent before the session knew it was dead), whether
	// etcd answered "expired" or "superseded" by the session's own
	// re-registration.
	Expired uint64
	// Retries counts resends of a submission after a refusal or after a
	// lookup proved it was not accepted.
	Retries uint64
	// Waits counts submissions that waited for a re-registration before
	// being sent.
	Waits uint64
	// Lookups counts lookups of submissions whose reply was lost.
	Lookups uint64
}

// sessionCounters are the live counters behind SessionStats.
type sessionCounters struct {
	registrations, renewals, accepted, expired, retries, waits, lookups atomic.Uint64
}

// snapshot reads every counter.
func (c *sessionCounters) snapshot() SessionStats {
	return SessionStats{
		Registrations: c.registrations.Load(),
		Renewals:      c.renewals.Load(),
		Accepted:      c.accepted.Load(),
		Expired:       c.expired.Load(),
		Retries:       c.retries.Load(),
		Waits:         c.waits.Load(),
		Lookups:       c.lookups.Load(),
	}
}
