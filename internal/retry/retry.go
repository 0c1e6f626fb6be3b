// Package retry holds the small waiting helpers shared by the packages that
// retry against etcd or memcached.
package retry

import (
	"context"
	"time"
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

// Backoff is an exponential backoff between Min and Max. It is not safe for
// concurrent use.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next wait: Min, then doubling up to Max.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else if b.cur *= 2; b.cur > b.Max {
		b.cur = b.Max
	}
	return b.cur
}

// Reset starts the sequence again at Min.
func (b *Backoff) Reset() { b.cur = 0 }
