package faults

import (
	"math/rand"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster"
)

// randomFault injects one fault, keeps it for a while, and undoes it.
type randomFault struct {
	name string
	run  func(s *scenario, rng *rand.Rand)
}

// between returns a duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int63n(int64(hi-lo)))
}

func anyNode(s *scenario, rng *rand.Rand) *cluster.Node { return s.c.Nodes[rng.Intn(len(s.c.Nodes))] }

var randomFaults = []randomFault{
	{"kill-node", func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.killNode(n)
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		s.restartNode(n, i)
	}},
	{"kill-leader", func(s *scenario, rng *rand.Rand) {
		n, st := s.leader()
		i := s.killNode(n)
		s.waitNewLeader(n.ID, st.Term)
		s.hold(between(rng, 0, 2*time.Second))
		s.restartNode(n, i)
	}},
	{"pause-leader-past-lease", func(s *scenario, rng *rand.Rand) {
		n, st := s.leader()
		i := s.pauseNode(n)
		s.waitNewLeader(n.ID, st.Term)
		s.hold(between(rng, 0, 2*time.Second))
		s.resumeNode(n, i)
	}},
	{"pause-node", func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.pauseNode(n)
		s.hold(between(rng, 100*time.Millisecond, 3*time.Second))
		s.resumeNode(n, i)
	}},
	{"cut-leader-etcd", func(s *scenario, rng *rand.Rand) {
		n, st := s.leader()
		i := s.fault("blackhole", n.ID+"->etcd", "memcached still reachable")
		n.EtcdLink.Blackhole()
		s.waitNewLeader(n.ID, st.Term)
		s.hold(between(rng, 0, 2*time.Second))
		if rng.Intn(2) == 0 {
			n.EtcdLink.Heal()
		} else {
			n.EtcdLink.HealReset()
		}
		s.healed(i)
	}},
	{"cut-node-etcd", func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.fault("blackhole", n.ID+"->etcd", "")
		n.EtcdLink.Blackhole()
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		n.EtcdLink.Heal()
		s.healed(i)
	}},
	{"cut-node-memcached", func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.fault("blackhole", n.ID+"->memcached", "")
		n.MemcachedLink.Blackhole()
		s.hold(between(rng, 200*time.Millisecond, 3*time.Second))
		n.MemcachedLink.Heal()
		s.healed(i)
	}},
	{"kill-etcd-leader", func(s *scenario, rng *rand.Rand) {
		ctx, cancel := s.timeout()
		defer cancel()
		m, err := s.c.EtcdLeader(ctx)
		if err != nil {
			s.fatalf("%v", err)
		}
		i := s.killMember(m)
		s.hold(between(rng, 500*time.Millisecond, 4*time.Second))
		s.restartMember(m, i)
	}},
	{"kill-member", func(s *scenario, rng *rand.Rand) {
		m := s.c.Members[rng.Intn(len(s.c.Members))]
		i := s.killMember(m)
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		s.restartMember(m, i)
	}},
	{"pause-member", func(s *scenario, rng *rand.Rand) {
		m := s.c.Members[rng.Intn(len(s.c.Members))]
		i := s.fault("SIGSTOP", "etcd "+m.Name, "")
		m.Proc.Pause()
		s.hold(between(rng, 200*time.Millisecond, 3*time.Second))
		m.Proc.Resume()
		s.healed(i)
	}},
	{"restart-memcached", func(s *scenario, rng *rand.Rand) {
		i := s.stopMemcached()
		s.hold(between(rng, 100*time.Millisecond, 3*time.Second))
		s.startMemcached(i)
	}},
	{"cut-caller", func(s *scenario, rng *rand.Rand) {
		i := s.fault("blackhole", "w0->etcd", "")
		s.callerLink.Blackhole()
		s.hold(between(rng, 500*time.Millisecond, 5*time.Second))
		s.callerLink.Heal()
		s.healed(i)
	}},
	{"restart-caller", func(s *scenario, rng *rand.Rand) {
		name := names[rng.Intn(len(names))]
		i := s.fault("restart", name, "new Register of the same name")
		s.w.Restart(name)
		s.healed(i)
	}},
	{"stop-node", func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.stopNode(n)
		s.hold(between(rng, 0, 2*time.Second))
		s.restartNode(n, i)
	}},
}

// TestRandomFaults injects faults drawn from a seeded generator, one after
// the other, for -faults.duration, checking after each that the cluster
// recovers and makes progress. Replay a run with -faults.seed.
func TestRandomFaults(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000_000
	}
	dur := *flagDuration
	s := start(t, "random", setup{seed: seed, callerLink: true, timeout: dur + 8*time.Minute})
	s.say("FAULTS random: seed=%d duration=%s (replay: go test -race -run TestRandomFaults ./integration/faults -faults.seed=%d -faults.duration=%s)", seed, dur, seed, dur)
	rng := rand.New(rand.NewSource(seed))
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		f := randomFaults[rng.Intn(len(randomFaults))]
		t.Logf("random fault: %s", f.name)
		f.run(s, rng)
		ctx, cancel := s.timeout()
		if err := s.c.WaitEtcdHealthy(ctx); err != nil {
			cancel()
			s.fatalf("after %s: %v", f.name, err)
		}
		cancel()
		s.progress(5)
		s.hold(between(rng, 0, time.Second))
	}
	s.finish()
}
