// Package retry holds the small waiting helpers shared by the packages that
// retry against etcd or memcached.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Sleep waits d or until ctx ends; it reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Jitter is the randomization factor of every Backoff: a wait is drawn
// from [1-Jitter, 1+Jitter] times the current interval, so that the many
// processes a single etcd failure sends into retry do not come back in
// step.
const Jitter = 0.5

// Backoff is an exponential backoff with jitter: intervals start at Min and
// double up to Max, each wait drawn around its interval (see Jitter). It is
// cenkalti/backoff's ExponentialBackOff, the backoff of the etcd and gRPC
// ecosystem. It is not safe for concurrent use.
type Backoff struct {
	// Min is the first interval.
	Min time.Duration
	// Max bounds the interval; a wait can exceed it by Jitter.
	Max time.Duration

	exp *backoff.ExponentialBackOff
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	if b.exp == nil {
		b.exp = &backoff.ExponentialBackOff{
			InitialInterval: b.Min, RandomizationFactor: Jitter, Multiplier: 2, MaxInterval: b.Max,
		}
		b.exp.Reset()
	}
	return b.exp.NextBackOff()
}

// Reset starts the sequence again at Min.
func (b *Backoff) Reset() {
	if b.exp != nil {
		b.exp.Reset()
	}
}
