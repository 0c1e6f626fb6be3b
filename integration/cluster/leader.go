package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/election"
)

// Observe reads the coordinator's leader and term.
func (c *Cluster) Observe(ctx context.Context) (election.Status, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return election.Observe(octx, c.Client, c.Layout)
}

// WaitLeader waits until a node leads and holds the latest term, and ok
// (when not nil) accepts the status.
func (c *Cluster) WaitLeader(ctx context.Context, ok func(election.Status) bool) (election.Status, error) {
	var last election.Status
	var lastErr error
	err := poll(ctx, 50*time.Millisecond, func() bool {
		st, err := c.Observe(ctx)
		if err != nil {
			lastErr = err
			return false
		}
		last = st
		return st.Leader != "" && st.Leader == st.TermHolder && (ok == nil || ok(st))
	})
	if err != nil {
		return last, fmt.Errorf("waiting for a leader (last seen %+v, last error %v): %w", last, lastErr, err)
	}
	return last, nil
}

// Leader returns the leading node once one leads.
func (c *Cluster) Leader(ctx context.Context) (*Node, election.Status, error) {
	st, err := c.WaitLeader(ctx, nil)
	if err != nil {
		return nil, st, err
	}
	n := c.Node(st.Leader)
	if n == nil {
		return nil, st, fmt.Errorf("leader %q is not a node of the cluster", st.Leader)
	}
	return n, st, nil
}

// WaitNewLeader waits until a node other than old leads with a term above
// term.
func (c *Cluster) WaitNewLeader(ctx context.Context, old string, term uint64) (election.Status, error) {
	return c.WaitLeader(ctx, func(st election.Status) bool { return st.Leader != old && st.Term > term })
}

// LeaseTTL is the nodes' lease TTL.
func (c *Cluster) LeaseTTL() time.Duration { return c.cfg.LeaseTTL }
