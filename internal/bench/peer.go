package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/bradfitz/gomemcache/memcache"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Measurement names of the peer scenario.
const (
	whatMutex  = "etcd mutex (per key) + memcached set"
	whatLeader = "lease leader, direct set (1 writer, no fencing)"
)

// runPeer measures the same workload built the ways a user would build it
// without the coordinator:
//
//   - every writer takes an etcd concurrency.Mutex on the key (one session
//     per writer), sets the key in memcached directly, and unlocks;
//   - one process wins a lease-based etcd election and sets keys in
//     memcached directly, with no fencing and no durable queue.
//
// and then ours, submit→applied with each caller waiting for its write,
// at the same concurrency. With Config.Repeat above 1, the three run that
// many times, in reverse order every other time.
func (r *runner) runPeer(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioPeer}
	conc := peerConcurrency
	ttl := int(r.cfg.LeaseTTL.Seconds())

	sessions := make([]*concurrency.Session, conc)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i := range sessions {
		s, err := concurrency.NewSession(r.Etcd, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			return sr, fmt.Errorf("mutex session: %w", err)
		}
		sessions[i] = s
	}
	if err := r.StartNode(ctx); err != nil {
		return sr, err
	}
	if err := r.Probe(ctx); err != nil {
		return sr, err
	}
	c := newComparison()
	err := r.compare(sr, c, c.measured(func() (Measurement, error) {
		return r.measure(ctx, whatMutex, conc, func(ctx context.Context, w, i int) error {
			key := r.Key("mutex", w, i)
			mu := concurrency.NewMutex(sessions[w], r.Scratch("mutex/"+key))
			if err := mu.Lock(ctx); err != nil {
				return err
			}
			err := r.Memcache.Set(&memcache.Item{Key: key, Value: r.Value})
			return errors.Join(err, mu.Unlock(ctx))
		}), nil
	}), c.measured(func() (Measurement, error) {
		return r.leaseLeader(ctx)
	}), c.measured(func() (Measurement, error) {
		return r.endToEndWaiting(ctx, conc)
	}))
	if err != nil {
		return sr, err
	}
	sr.Measurements = append(sr.Measurements, c.median(whatApplied), c.median(whatMutex), c.median(whatLeader))
	sr.notef("ours and the mutex writers each wait until their write is in memcached before the next")
	sr.notef("the lease leader is one goroutine writing as fast as memcached answers: " +
		"an upper bound with neither durability nor ordering across writers nor fencing")
	sr.addRatio(ratioPeerMutex, conc, c.ratio(whatApplied, whatMutex, opsPerSec))
	sr.addRatio(ratioPeerLeader, conc, c.ratio(whatApplied, whatLeader, opsPerSec))
	return sr, nil
}

// leaseLeader campaigns in an etcd election and, once elected, sets keys in
// memcached directly from one goroutine for the configured duration.
func (r *runner) leaseLeader(ctx context.Context) (Measurement, error) {
	s, err := concurrency.NewSession(r.Etcd, concurrency.WithTTL(int(r.cfg.LeaseTTL.Seconds())), concurrency.WithContext(ctx))
	if err != nil {
		return Measurement{}, fmt.Errorf("leader session: %w", err)
	}
	defer s.Close()
	el := concurrency.NewElection(s, r.Scratch("leader"))
	if err := el.Campaign(ctx, "bench"); err != nil {
		return Measurement{}, fmt.Errorf("leader campaign: %w", err)
	}
	defer el.Resign(context.WithoutCancel(ctx))
	return r.measure(ctx, whatLeader, 1, func(ctx context.Context, w, i int) error {
		select {
		case <-s.Done():
			return errors.New("leader session ended")
		default:
		}
		return r.Memcache.Set(&memcache.Item{Key: r.Key("lead", w, i), Value: r.Value})
	}), nil
}
