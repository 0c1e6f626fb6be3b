package faults

import (
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster"
)

// TestAPICallerNodeKill has caller w3 submit through the caller API of the
// coordinator leader (pkg/apiclient, gRPC) while the others submit
// straight to etcd, and kills that node with SIGKILL under it: w3's calls
// in flight end with unknown outcomes (settled by etcd's history), its
// lease runs out with the node's keep-alive stream, and once the node is
// back w3 registers again through it and goes on. Another node takes over
// the leadership meanwhile.
func TestAPICallerNodeKill(t *testing.T) {
	s := start(t, "api-node-kill", setup{apiCaller: true})
	n := s.apiNode
	s.waitOKFor(apiName, 10)
	_, st := s.leader()
	i := s.killNode(n)
	if st.Leader == n.ID {
		s.waitNewLeader(n.ID, st.Term)
	}
	s.progress(30)
	s.restartNode(n, i)
	s.waitOKFor(apiName, 10)
	s.progress(20)
	rep := s.finish()
	if rep.Stats.Calls == 0 {
		s.t.Errorf("no calls recorded")
	}
}

// waitOKFor waits until n more submissions of name are acknowledged.
func (s *scenario) waitOKFor(name string, n int64) {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	target := s.w.OKFor(name) + n
	if err := cluster.Poll(ctx, 20*time.Millisecond, func() bool { return s.w.OKFor(name) >= target }); err != nil {
		s.fatalf("%s: %d of %d more submissions acknowledged through %s's API: %v", name, n-(target-s.w.OKFor(name)), n, s.apiNode.ID, err)
	}
}
