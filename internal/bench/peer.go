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
func (e *env) runPeer(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioPeer}
	conc := peerConcurrency
	ttl := int(e.cfg.LeaseTTL.Seconds())

	sessions := make([]*concurrency.Session, conc)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i := range sessions {
		s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			return sr, fmt.Errorf("mutex session: %w", err)
		}
		sessions[i] = s
	}
	if err := e.startNode(ctx); err != nil {
		return sr, err
	}
	if err := e.probe(ctx); err != nil {
		return sr, err
	}
	c := newComparison()
	err := e.compare(sr, c, c.measured(func() (Measurement, error) {
		return e.measure(ctx, whatMutex, conc, func(ctx context.Context, w, i int) error {
			key := e.key("mutex", w, i)
			mu := concurrency.NewMutex(sessions[w], e.scratch("mutex/"+key))
			if err := mu.Lock(ctx); err != nil {
				return err
			}
			err := e.mc.Set(&memcache.Item{Key: key, Value: e.value})
			return errors.Join(err, mu.Unlock(ctx))
		}), nil
	}), c.measured(func() (Measurement, error) {
		return e.leaseLeader(ctx)
	}), c.measured(func() (Measurement, error) {
		return e.endToEndWaiting(ctx, conc)
	}))
	if err != nil {
		return sr, err
	}
	sr.Measurements = append(sr.Measurements, c.median(whatApplied), c.median(whatMutex), c.median(whatLeader))
	sr.notef("ours and the mutex writers each wait until their write is in memcached before the next")
	sr.notef("the lease leader is one goroutine writing as fast as memcached answers: an upper bound with neither durability nor ordering across writers nor fencing")
	sr.addRatio(ratioPeerMutex, conc, c.ratio(whatApplied, whatMutex, opsPerSec))
	sr.addRatio(ratioPeerLeader, conc, c.ratio(whatApplied, whatLeader, opsPerSec))
	return sr, nil
}

// leaseLeader campaigns in an etcd election and, once elected, sets keys in
// memcached directly from one goroutine for the configured duration.
func (e *env) leaseLeader(ctx context.Context) (Measurement, error) {
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(int(e.cfg.LeaseTTL.Seconds())), concurrency.WithContext(ctx))
	if err != nil {
		return Measurement{}, fmt.Errorf("leader session: %w", err)
	}
	defer s.Close()
	el := concurrency.NewElection(s, e.scratch("leader"))
	if err := el.Campaign(ctx, "bench"); err != nil {
		return Measurement{}, fmt.Errorf("leader campaign: %w", err)
	}
	defer el.Resign(context.WithoutCancel(ctx))
	return e.measure(ctx, whatLeader, 1, func(ctx context.Context, w, i int) error {
		select {
		case <-s.Done():
			return errors.New("leader session ended")
		default:
		}
		return e.mc.Set(&memcache.Item{Key: e.key("lead", w, i), Value: e.value})
	}), nil
}
