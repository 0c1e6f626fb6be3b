package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster"
	"github.com/coordinator-dev/coordinator/integration/harness"
)

// reactionSlack is what the bound of TestLeaderMemberIsolated allows a
// node between its lease deadline and its log line saying its leadership
// ended: its deadline timer firing and its applier and watchers winding
// down, on a busy machine.
const reactionSlack = 2 * time.Second

// TestLeaderMemberIsolated cuts the etcd member the coordinator leader
// talks to off from the other members, both ways, while the leader still
// reaches it: the member can no longer serve linearizable reads and
// writes or renew leases, so the leader must stop leading within its
// lease of the moment its member could no longer renew it, and a node on
// another member takes over. Callers whose client picked the isolated
// member time out meanwhile (unknown outcomes).
//
// That moment is the cut when the member follows (it forwards renewals to
// the etcd leader); an isolated etcd leader renews leases until it finds
// it lost its quorum, an election timeout counted in its own ticks, which
// a busy machine stretches, so the moment is when it is seen leading no
// more. The leadership ends when the node says so in its log (its own
// timestamp, not when the test reads the line). From one moment to the
// other may take the lease plus reactionSlack.
func TestLeaderMemberIsolated(t *testing.T) {
	s := start(t, "leader-member-isolated", setup{})
	n, st := s.leader()
	m := n.Member
	ended := strings.Count(n.Output(), "leadership ended")
	i := s.fault("partition", "etcd "+m.Name, "peer links cut both ways, clients still reach it")
	cut := time.Now()
	s.c.IsolateMember(m)
	ctx, cancel := s.timeout()
	defer cancel()
	unrenewable, err := s.c.WaitNotLeading(ctx, m)
	if err != nil {
		s.fatalf("isolated member %s: %v", m.Name, err)
	}
	var line string
	if err := cluster.Poll(ctx, 10*time.Millisecond, func() bool {
		line = nthLine(n.Output(), "leadership ended", ended+1)
		return line != ""
	}); err != nil {
		s.fatalf("%s, talking only to isolated member %s, never stopped leading: %v", n.ID, m.Name, err)
	}
	stopped, err := logTime(line)
	if err != nil {
		s.fatalf("%s: %v", n.ID, err)
	}
	took := stopped.Sub(unrenewable)
	bound := s.c.LeaseTTL() + reactionSlack
	s.t.Logf("%s stopped leading %s after its member %s was isolated, %s after %s could no longer renew its lease (bound %s)",
		n.ID, stopped.Sub(cut).Round(time.Millisecond), m.Name, took.Round(time.Millisecond), m.Name, bound)
	if took > bound {
		s.t.Errorf("%s stopped leading %s after its member could no longer renew its lease; its lease is %s (bound %s)", n.ID, took, s.c.LeaseTTL(), bound)
	}
	s.waitNewLeader(n.ID, st.Term)
	s.progress(10)
	s.c.HealPeers()
	s.healed(i)
	s.progress(20)
	s.finish()
}

// nthLine returns the n-th line (from 1) of out that contains substr, ""
// if there are fewer.
func nthLine(out, substr string, n int) string {
	for _, l := range harness.Lines(out) {
		if strings.Contains(l, substr) {
			if n--; n == 0 {
				return l
			}
		}
	}
	return ""
}

// logTime is the time a node's log line was written, by its time= field.
func logTime(line string) (time.Time, error) {
	v, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, fmt.Errorf("log line without a time: %q", line)
	}
	v, _, _ = strings.Cut(v, " ")
	return time.Parse(time.RFC3339Nano, v)
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
