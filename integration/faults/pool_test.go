package faults

import (
	"encoding/json"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

// TestMemcachedPoolMemberRestart runs the nodes over a pool of three
// memcached servers (ketama, each behind a proxy of its own) and kills one
// of them while callers submit, then starts it again, empty. Readers read
// with the deployment's distribution; the restart loses that server's keys
// only, so a miss of a key on another server is still a violation.
func TestMemcachedPoolMemberRestart(t *testing.T) {
	s := start(t, "pool-member-restart", setup{pool: 3})
	s.checkTopology()
	// The server that holds the most of the workload's keys.
	p, most := 0, -1
	for i := range s.c.Pool {
		if n := len(s.c.ServerKeys(i, keys)); n > most {
			p, most = i, n
		}
	}
	t.Logf("killing pool server %d (%s), which holds %v", p, s.c.Pool[p].Memcached.Addr, s.c.ServerKeys(p, keys))
	i := s.stopPoolServer(p)
	ctx, cancel := s.timeout()
	defer cancel()
	if _, err := s.w.WaitOK(ctx, 20); err != nil {
		s.fatalf("submissions while a pool server is down: %v", err)
	}
	n, err := s.c.Pending(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	if n == 0 {
		s.t.Errorf("no batch pending while a pool server is down")
	}
	s.startPoolServer(p, i)
	s.progress(40)
	rep := s.finish()
	if rep.Stats.Wipes != 1 {
		s.t.Errorf("wipes=%d, want 1", rep.Stats.Wipes)
	}
}

// checkTopology checks that the namespace's topology in etcd is the
// cluster's ring: the nodes write with the distribution readers read with.
func (s *scenario) checkTopology() {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	resp, err := s.c.Client.Get(ctx, s.c.Layout.Topology())
	if err != nil || len(resp.Kvs) != 1 {
		s.fatalf("read the topology: %v (%d keys)", err, len(resp.Kvs))
	}
	var topo struct {
		Distribution hashring.Distribution `json:"distribution"`
		Servers      []hashring.Server     `json:"servers"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &topo); err != nil {
		s.fatalf("topology %q: %v", resp.Kvs[0].Value, err)
	}
	want := s.c.Ring.Servers()
	ok := topo.Distribution == s.c.Ring.Distribution() && len(topo.Servers) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = topo.Servers[i].Addr == want[i].Addr
	}
	if !ok {
		s.fatalf("topology in etcd %s, want %s %v", resp.Kvs[0].Value, s.c.Ring.Distribution(), want)
	}
}
