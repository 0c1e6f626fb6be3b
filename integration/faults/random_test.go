package faults

import (
	"flag"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster"
)

var (
	flagOverlap = flag.Int("faults.overlap", 3, "most faults TestRandomFaults holds at once; 1 injects one at a time")
	flagAPI     = flag.Bool("faults.api", false, "TestRandomFaults: caller w3 submits through the caller API of the node that leads at the start")
	flagPool    = flag.Int("faults.pool", 1, "memcached servers of every scenario's deployment (but those that set their own); with more than one, TestRandomFaults restarts one server at a time")
)

// Fault classes: faults of one class never overlap each other, so two
// faults never act on the same process (one killing what the other
// paused), etcd keeps its quorum apart from what one fault does, and a
// fault that waits for a new coordinator leader always has a node left to
// take over.
const (
	classNode      = "node"
	classEtcd      = "etcd"
	classMemcached = "memcached"
	classSlow      = "slow"
	classCaller    = "caller"
)

// randomFault injects one fault, keeps it for a while, and undoes it.
type randomFault struct {
	name  string
	class string
	run   func(s *scenario, rng *rand.Rand)
}

// between returns a duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int63n(int64(hi-lo)))
}

func anyNode(s *scenario, rng *rand.Rand) *cluster.Node { return s.c.Nodes[rng.Intn(len(s.c.Nodes))] }

func anyMember(s *scenario, rng *rand.Rand) *cluster.Member {
	return s.c.Members[rng.Intn(len(s.c.Members))]
}

var randomFaults = []randomFault{
	{"kill-node", classNode, func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.killNode(n)
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		s.restartNode(n, i)
	}},
	{"kill-leader", classNode, func(s *scenario, rng *rand.Rand) {
		n, st := s.leader()
		i := s.killNode(n)
		s.waitNewLeader(n.ID, st.Term)
		s.hold(between(rng, 0, 2*time.Second))
		s.restartNode(n, i)
	}},
	{"pause-leader-past-lease", classNode, func(s *scenario, rng *rand.Rand) {
		n, st := s.leader()
		i := s.pauseNode(n)
		s.waitNewLeader(n.ID, st.Term)
		s.hold(between(rng, 0, 2*time.Second))
		s.resumeNode(n, i)
	}},
	{"pause-node", classNode, func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.pauseNode(n)
		s.hold(between(rng, 100*time.Millisecond, 3*time.Second))
		s.resumeNode(n, i)
	}},
	{"cut-leader-etcd", classNode, func(s *scenario, rng *rand.Rand) {
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
	{"cut-node-etcd", classNode, func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.fault("blackhole", n.ID+"->etcd", "")
		n.EtcdLink.Blackhole()
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		n.EtcdLink.Heal()
		s.healed(i)
	}},
	{"cut-node-memcached", classNode, func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.fault("blackhole", n.ID+"->memcached", "")
		for _, l := range n.MemcachedLinks {
			l.Blackhole()
		}
		s.hold(between(rng, 200*time.Millisecond, 3*time.Second))
		for _, l := range n.MemcachedLinks {
			l.Heal()
		}
		s.healed(i)
	}},
	{"compact-etcd", classNode, func(s *scenario, rng *rand.Rand) {
		// Every node down, batches pending, the history they need
		// compacted: the next leader reads them with a range read.
		s.compactedReplay(func() { s.hold(between(rng, 500*time.Millisecond, 3*time.Second)) })
	}},
	{"stop-node", classNode, func(s *scenario, rng *rand.Rand) {
		n := anyNode(s, rng)
		i := s.stopNode(n)
		s.hold(between(rng, 0, 2*time.Second))
		s.restartNode(n, i)
	}},
	{"kill-etcd-leader", classEtcd, func(s *scenario, rng *rand.Rand) {
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
	{"kill-member", classEtcd, func(s *scenario, rng *rand.Rand) {
		m := anyMember(s, rng)
		i := s.killMember(m)
		s.hold(between(rng, 200*time.Millisecond, 4*time.Second))
		s.restartMember(m, i)
	}},
	{"pause-member", classEtcd, func(s *scenario, rng *rand.Rand) {
		m := anyMember(s, rng)
		i := s.fault("SIGSTOP", "etcd "+m.Name, "")
		m.Proc.Pause()
		s.hold(between(rng, 200*time.Millisecond, 3*time.Second))
		m.Proc.Resume()
		s.healed(i)
	}},
	{"isolate-member", classEtcd, func(s *scenario, rng *rand.Rand) {
		m := anyMember(s, rng)
		if rng.Intn(2) == 0 {
			// The member the coordinator leader talks to, when one leads.
			ctx, cancel := s.timeout()
			if n, _, err := s.c.Leader(ctx); err == nil {
				m = n.Member
			}
			cancel()
		}
		i := s.isolateMember(m)
		s.hold(between(rng, 500*time.Millisecond, 5*time.Second))
		s.healPeers(i)
	}},
	{"cut-peer-one-way", classEtcd, func(s *scenario, rng *rand.Rand) {
		from := anyMember(s, rng)
		to := s.c.Members[(indexOf(s.c.Members, from)+1+rng.Intn(len(s.c.Members)-1))%len(s.c.Members)]
		i := s.fault("partition", "etcd "+from.Name+"->"+to.Name, "one way only")
		s.c.CutPeer(from, to)
		s.hold(between(rng, 500*time.Millisecond, 5*time.Second))
		s.healPeers(i)
	}},
	{"restart-memcached", classMemcached, func(s *scenario, rng *rand.Rand) {
		// With a pool, one server of it.
		p := 0
		if len(s.c.Pool) > 1 {
			p = rng.Intn(len(s.c.Pool))
		}
		i := s.stopPoolServer(p)
		s.hold(between(rng, 100*time.Millisecond, 3*time.Second))
		s.startPoolServer(p, i)
	}},
	{"slow-etcd", classSlow, func(s *scenario, rng *rand.Rand) {
		i := s.slowEtcdOn()
		s.hold(between(rng, time.Second, 6*time.Second))
		s.slowEtcdOff(i)
	}},
	{"slow-memcached", classSlow, func(s *scenario, rng *rand.Rand) {
		i := s.slowMemcachedOn()
		s.hold(between(rng, time.Second, 6*time.Second))
		s.slowMemcachedOff(i)
	}},
	{"cut-caller", classCaller, func(s *scenario, rng *rand.Rand) {
		i := s.fault("blackhole", "w0->etcd", "")
		s.callerLink.Blackhole()
		s.hold(between(rng, 500*time.Millisecond, 5*time.Second))
		s.callerLink.Heal()
		s.healed(i)
	}},
	{"restart-caller", classCaller, func(s *scenario, rng *rand.Rand) {
		name := names[rng.Intn(len(names))]
		i := s.fault("restart", name, "new Register of the same name")
		s.w.Restart(name)
		s.healed(i)
	}},
}

func indexOf(ms []*cluster.Member, m *cluster.Member) int {
	for i, o := range ms {
		if o == m {
			return i
		}
	}
	return -1
}

// randomBurst is the callers' burst in TestRandomFaults
// (workload.Config.Burst): four transactions' worth, two more than a
// leader's round, so that rounds end inside the bursts' transactions and
// the watermark stops at an index short of their last batch, which
// callers wait for (G8).
const randomBurst = 256

// TestRandomFaults injects faults drawn from a seeded generator for
// -faults.duration, in groups of one to -faults.overlap faults held at
// once (started a little apart; faults of one class one after the other),
// and checks after each group, once every fault of it is healed, that the
// cluster recovers and makes progress. The seed fixes the groups, their
// faults, targets and lengths; replay a run with -faults.seed (and the
// same -faults.overlap).
func TestRandomFaults(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000_000
	}
	dur := *flagDuration
	overlap := max(*flagOverlap, 1)
	name := "random"
	if *flagSoak {
		name = "soak"
	}
	s := start(t, name, setup{seed: seed, callerLink: true, timeout: dur + 8*time.Minute, monitor: *flagSoak, apiCaller: *flagAPI, burst: randomBurst})
	if *flagSoak {
		s.soak = s.startSoak(*flagSoakEvery)
	}
	s.say("FAULTS random: seed=%d duration=%s overlap=%d pool=%d api=%t (replay: go test -race -run TestRandomFaults ./integration/faults -faults.seed=%d -faults.duration=%s -faults.overlap=%d -faults.pool=%d -faults.api=%t)",
		seed, dur, overlap, len(s.c.Pool), *flagAPI, seed, dur, overlap, len(s.c.Pool), *flagAPI)
	rng := rand.New(rand.NewSource(seed))
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		if overlap == 1 {
			// One fault at a time, on the test's goroutine.
			f := randomFaults[rng.Intn(len(randomFaults))]
			t.Logf("random fault: %s", f.name)
			f.run(s, rng)
		} else {
			s.runGroup(rng, 1+rng.Intn(overlap))
		}
		if t.Failed() {
			t.FailNow()
		}
		ctx, cancel := s.timeout()
		if err := s.c.WaitEtcdHealthy(ctx); err != nil {
			cancel()
			s.fatalf("after healing: %v", err)
		}
		cancel()
		s.progress(5)
		s.hold(between(rng, 0, time.Second))
	}
	s.finish()
}

// runGroup runs k faults drawn from rng at once, each started up to 1.5s
// after the one before (a fault of a class already in the group starts
// when the one before it of that class is healed), and returns when every
// one of them is healed. Each fault draws from its own generator seeded
// from rng, so the seed fixes every choice whatever the interleaving.
func (s *scenario) runGroup(rng *rand.Rand, k int) {
	var wg sync.WaitGroup
	last := map[string]chan struct{}{} // the class's latest fault of the group, closed when healed
	for j := range k {
		f := randomFaults[rng.Intn(len(randomFaults))]
		frng := rand.New(rand.NewSource(rng.Int63()))
		if j > 0 {
			s.hold(between(rng, 0, 1500*time.Millisecond))
		}
		s.t.Logf("random fault: %s (%d of %d at once)", f.name, j+1, k)
		prev, done := last[f.class], make(chan struct{})
		last[f.class] = done
		wg.Add(1)
		// A fatal failure inside ends only this goroutine (the test is
		// marked failed); the test stops after the group.
		go func() {
			defer wg.Done()
			defer close(done)
			if prev != nil {
				<-prev
			}
			f.run(s, frng)
		}()
	}
	wg.Wait()
}
