package faults

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/cluster"
)

// TestLeaderKill kills the leader with SIGKILL; a follower takes over after
// the lease and replays what was pending; the old node comes back as a
// follower.
func TestLeaderKill(t *testing.T) {
	s := start(t, "leader-kill", setup{})
	n, st := s.leader()
	i := s.killNode(n)
	s.waitNewLeader(n.ID, st.Term)
	s.progress(40)
	s.restartNode(n, i)
	s.progress(40)
	s.finish()
}

// TestLeaderPause stops the leader with SIGSTOP until another node has
// taken over and written under its newer term, then resumes it: the former
// leader must not write over the newer term (G5).
func TestLeaderPause(t *testing.T) {
	s := start(t, "leader-pause", setup{})
	n, st := s.leader()
	i := s.pauseNode(n)
	s.waitNewLeader(n.ID, st.Term)
	s.progress(40)
	s.resumeNode(n, i)
	s.progress(40)
	s.finish()
}

// TestZombieLeader cuts the leader off from etcd while it still reaches
// memcached. It must stop writing on its own lease deadline; another node
// takes over. When the link heals, what the proxy held (the zombie's
// renewals, commits, watch traffic) is delivered late.
func TestZombieLeader(t *testing.T) {
	s := start(t, "zombie-leader", setup{})
	n, st := s.leader()
	i := s.fault("blackhole", n.ID+"->etcd", "memcached still reachable")
	n.EtcdLink.Blackhole()
	s.waitNewLeader(n.ID, st.Term)
	s.progress(40)
	n.EtcdLink.Heal()
	s.healed(i)
	s.progress(40)
	s.finish()
}

// TestEtcdLeaderKill kills the etcd leader (found with the maintenance
// Status API); the other two members elect a new one and keep quorum.
func TestEtcdLeaderKill(t *testing.T) {
	s := start(t, "etcd-leader-kill", setup{})
	ctx, cancel := s.timeout()
	defer cancel()
	m, err := s.c.EtcdLeader(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	i := s.killMember(m)
	var next *cluster.Member
	if err := cluster.Poll(ctx, 50*time.Millisecond, func() bool {
		next, err = s.c.EtcdLeader(ctx)
		return err == nil && next != m
	}); err != nil {
		s.fatalf("no new etcd leader after killing %s: %v", m.Name, err)
	}
	s.t.Logf("etcd leader %s killed, %s leads", m.Name, next.Name)
	s.progress(40)
	s.restartMember(m, i)
	s.progress(40)
	s.finish()
}

// TestLeaderMemberKill kills the etcd member the coordinator leader talks
// to: the leader loses etcd (but etcd keeps quorum), and a node talking to
// another member takes over.
func TestLeaderMemberKill(t *testing.T) {
	s := start(t, "leader-member-kill", setup{})
	n, st := s.leader()
	i := s.killMember(n.Member)
	s.waitNewLeader(n.ID, st.Term)
	s.progress(40)
	s.restartMember(n.Member, i)
	s.progress(40)
	s.finish()
}

// TestMemcachedRestart kills memcached while callers keep submitting:
// operations stay pending, and are applied when memcached is back (empty).
func TestMemcachedRestart(t *testing.T) {
	s := start(t, "memcached-restart", setup{})
	i := s.stopMemcached()
	ctx, cancel := s.timeout()
	defer cancel()
	if _, err := s.w.WaitOK(ctx, 20); err != nil {
		s.fatalf("submissions while memcached is down: %v", err)
	}
	n, err := s.c.Pending(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	if n == 0 {
		s.t.Errorf("no batch pending while memcached is down")
	}
	s.startMemcached(i)
	s.progress(40)
	s.finish()
}

// TestCallerLeaseExpiry cuts caller w0 off from etcd until its lease
// expires; its submissions are refused as expired, and it restarts under
// the same name (a new incarnation) once the link heals.
func TestCallerLeaseExpiry(t *testing.T) {
	s := start(t, "caller-lease-expiry", setup{callerLink: true})
	ctx, cancel := s.timeout()
	defer cancel()
	regKey := s.c.Layout.Reg("w0")
	resp, err := s.c.Client.Get(ctx, regKey)
	if err != nil || len(resp.Kvs) == 0 {
		s.fatalf("w0 is not registered: %v", err)
	}
	inc := resp.Kvs[0].ModRevision
	i := s.fault("blackhole", "w0->etcd", "until w0's lease expires")
	s.callerLink.Blackhole()
	if err := cluster.Poll(ctx, 50*time.Millisecond, func() bool {
		r, err := s.c.Client.Get(ctx, regKey)
		return err == nil && (len(r.Kvs) == 0 || r.Kvs[0].ModRevision != inc)
	}); err != nil {
		s.fatalf("w0's registration %d never expired: %v", inc, err)
	}
	s.progress(15)
	s.callerLink.Heal()
	s.healed(i)
	if err := cluster.Poll(ctx, 50*time.Millisecond, func() bool {
		r, err := s.c.Client.Get(ctx, regKey, clientv3.WithSerializable())
		return err == nil && len(r.Kvs) > 0 && r.Kvs[0].ModRevision > inc
	}); err != nil {
		s.fatalf("w0 never registered again after its lease expired: %v", err)
	}
	s.progress(40)
	s.finish()
	// After the link healed, the old incarnation's next submission (or a
	// held one) is refused: as expired, or as superseded when the caller
	// happened to restart first.
	var expired, superseded int
	for _, c := range s.rec.History(checker.Final{}).Calls {
		if c.Name != "w0" || c.Incarnation != inc || c.Result != checker.Refused {
			continue
		}
		if strings.Contains(c.Err, "expired") {
			expired++
		} else {
			superseded++
		}
	}
	s.t.Logf("w0 incarnation %d after its lease expired: %d refused as expired, %d as superseded", inc, expired, superseded)
	if expired+superseded == 0 {
		t.Errorf("no submission of w0's expired incarnation %d was refused", inc)
	}
}

// TestBacklogReplay kills every node while callers keep submitting, so
// that the next leader finds more pending batches than one commit takes
// (applier.DefaultMaxBatchesPerCommit) and replays them in several commits.
// Callers waiting on their tokens read their keys back as soon as the
// watermark passes them (G8): the replay must have written the newest
// value of every key of the window before its first commit.
func TestBacklogReplay(t *testing.T) {
	s := start(t, "backlog-replay", setup{})
	var faults []int
	for _, n := range s.c.Nodes {
		faults = append(faults, s.killNode(n))
	}
	ctx, cancel := s.timeout()
	defer cancel()
	if _, err := s.w.WaitOK(ctx, 150); err != nil {
		s.fatalf("submissions while no node runs: %v", err)
	}
	for i, n := range s.c.Nodes {
		s.restartNode(n, faults[i])
	}
	s.progress(40)
	s.finish()
}

// TestCompactedBacklogReplay is TestBacklogReplay with etcd's history
// compacted while no node runs: the next leader finds the history its
// watch of the pending batches would read gone, and reads them with a
// range read. Batches of one transaction come back from it in key order,
// not in their index order (G2). The test keeps its own copy of the
// history for the checker (cluster.Compact).
func TestCompactedBacklogReplay(t *testing.T) {
	s := start(t, "compacted-replay", setup{})
	s.compactedReplay(func() {
		ctx, cancel := s.timeout()
		defer cancel()
		if _, err := s.w.WaitOK(ctx, 60); err != nil {
			s.fatalf("submissions while no node runs: %v", err)
		}
	})
	s.progress(40)
	s.finish()
	if s.rangeReads() == 0 {
		t.Errorf("no leader read the pending batches with a range read; leader changes: %s", s.takeovers())
	}
}

// TestRollingRestart stops every node gracefully (SIGTERM) and starts it
// again, one after the other, while the workload runs: a stopping leader
// hands over at once.
func TestRollingRestart(t *testing.T) {
	s := start(t, "rolling-restart", setup{})
	for _, n := range s.c.Nodes {
		i := s.stopNode(n)
		s.progress(15)
		s.restartNode(n, i)
		s.progress(15)
	}
	s.finish()
}
