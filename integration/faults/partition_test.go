package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster"
)

// electionTimeout is the members' election timeout (integration/cmd/etcdmember's
// -election-ms default): an isolated etcd leader keeps acting as leader,
// renewing leases, until it finds it lost its quorum.
const electionTimeout = time.Second

// TestLeaderMemberIsolated cuts the etcd member the coordinator leader
// talks to off from the other members, both ways, while the leader still
// reaches it: the member can no longer serve linearizable reads and
// writes or renew leases, so the leader must stop leading within its
// lease (plus the election timeout an isolated etcd leader takes to step
// down; the bound adds a second for a busy machine), and a node on another
// member takes over. Callers whose client picked the isolated member time
// out meanwhile (unknown outcomes).
func TestLeaderMemberIsolated(t *testing.T) {
	s := start(t, "leader-member-isolated", setup{})
	n, st := s.leader()
	m := n.Member
	ended := strings.Count(n.Output(), "leadership ended")
	i := s.fault("partition", "etcd "+m.Name, "peer links cut both ways, clients still reach it")
	cut := time.Now()
	s.c.IsolateMember(m)
	bound := s.c.LeaseTTL() + electionTimeout + 2*time.Second
	ctx, cancel := s.timeout()
	defer cancel()
	if err := cluster.Poll(ctx, 10*time.Millisecond, func() bool {
		return strings.Count(n.Output(), "leadership ended") > ended
	}); err != nil {
		s.fatalf("%s, talking only to isolated member %s, never stopped leading: %v", n.ID, m.Name, err)
	}
	took := time.Since(cut)
	s.t.Logf("%s stopped leading %s after its member %s was isolated (bound %s)", n.ID, took.Round(time.Millisecond), m.Name, bound)
	if took > bound {
		s.t.Errorf("%s stopped leading %s after its member was isolated; its lease is %s (bound %s)", n.ID, took, s.c.LeaseTTL(), bound)
	}
	s.waitNewLeader(n.ID, st.Term)
	s.progress(10)
	s.c.HealPeers()
	s.healed(i)
	s.progress(20)
	s.finish()
}

// isolateMember cuts m off from the other members and records the fault.
func (s *scenario) isolateMember(m *cluster.Member) int {
	i := s.fault("partition", "etcd "+m.Name, "peer links cut both ways, clients still reach it")
	s.c.IsolateMember(m)
	return i
}

// healPeers lifts every cut between members and records fault i healed.
// Only one fault of class etcd is held at a time, so no other cut is
// lifted with it.
func (s *scenario) healPeers(i int) {
	s.c.HealPeers()
	s.healed(i)
}

// TestPartitionDuringEtcdLeaderKill holds two faults at once: the
// coordinator leader is cut off from etcd (memcached still reachable)
// and, at the same moment, the etcd leader is killed. The takeover
// happens during etcd's own leader change.
func TestPartitionDuringEtcdLeaderKill(t *testing.T) {
	s := start(t, "partition-etcd-leader", setup{})
	n, st := s.leader()
	ctx, cancel := s.timeout()
	defer cancel()
	m, err := s.c.EtcdLeader(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	cut := s.fault("blackhole", n.ID+"->etcd", "memcached still reachable")
	n.EtcdLink.Blackhole()
	kill := s.killMember(m)
	s.waitNewLeader(n.ID, st.Term)
	s.progress(20)
	s.restartMember(m, kill)
	n.EtcdLink.Heal()
	s.healed(cut)
	s.progress(20)
	s.finish()
}
