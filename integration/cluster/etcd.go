package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemberStatus is what the maintenance Status API reports of one member.
type MemberStatus struct {
	Member *Member
	ID     uint64
	Leader uint64
	Err    error
}

// EtcdStatus asks every member for its status.
func (c *Cluster) EtcdStatus(ctx context.Context) []MemberStatus {
	out := make([]MemberStatus, len(c.Members))
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := c.Client.Status(sctx, m.Endpoint())
			out[i] = MemberStatus{Member: m, Err: err}
			if err == nil {
				out[i].ID, out[i].Leader = resp.Header.MemberId, resp.Leader
			}
		}()
	}
	wg.Wait()
	return out
}

// EtcdLeader waits until the members that answer agree on a leader and
// returns it.
func (c *Cluster) EtcdLeader(ctx context.Context) (*Member, error) {
	var leader *Member
	err := poll(ctx, 50*time.Millisecond, func() bool {
		leader = nil
		st := c.EtcdStatus(ctx)
		var lid uint64
		for _, s := range st {
			if s.Err != nil {
				continue
			}
			if s.Leader == 0 || (lid != 0 && s.Leader != lid) {
				return false
			}
			lid = s.Leader
		}
		for _, s := range st {
			if s.Err == nil && s.ID == lid {
				leader = s.Member
			}
		}
		return leader != nil
	})
	if err != nil {
		return nil, fmt.Errorf("no etcd leader: %w", err)
	}
	return leader, nil
}

// WaitNotLeading waits until member m does not take itself for the etcd
// leader and returns when it was first seen so, which is at or after the
// moment it stopped leading.
func (c *Cluster) WaitNotLeading(ctx context.Context, m *Member) (time.Time, error) {
	var seen time.Time
	var lastErr error
	err := poll(ctx, 10*time.Millisecond, func() bool {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := c.Client.Status(sctx, m.Endpoint())
		if err != nil {
			lastErr = err
			return false
		}
		seen = time.Now()
		return resp.Leader != resp.Header.MemberId
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%s still leads etcd (last error %v): %w", m.Name, lastErr, err)
	}
	return seen, nil
}

// WaitEtcdHealthy waits until every member answers, all agree on one
// leader, and a linearizable read succeeds.
func (c *Cluster) WaitEtcdHealthy(ctx context.Context) error {
	var why string
	err := poll(ctx, 100*time.Millisecond, func() bool {
		st := c.EtcdStatus(ctx)
		var lid uint64
		for _, s := range st {
			if s.Err != nil {
				why = fmt.Sprintf("member %s: %v", s.Member.Name, s.Err)
				return false
			}
			if s.Leader == 0 || (lid != 0 && s.Leader != lid) {
				why = "members disagree on the leader"
				return false
			}
			lid = s.Leader
		}
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := c.Client.Get(gctx, "health"); err != nil {
			why = err.Error()
			return false
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("etcd not healthy (%s): %w", why, err)
	}
	return nil
}
