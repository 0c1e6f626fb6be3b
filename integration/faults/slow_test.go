package faults

import (
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
)

// slowEtcd is the shape of every etcd link in a slow-etcd fault: each
// direction +25ms (±5ms), so every round trip to or between members takes
// about 50ms more.
var slowEtcd = proxy.Shape{Latency: 25 * time.Millisecond, Jitter: 5 * time.Millisecond}

// slowMemcached is the shape of the nodes' memcached link in a
// slow-memcached fault: +20ms (±10ms) each way and 256 KiB/s each way.
var slowMemcached = proxy.Shape{Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, BytesPerSecond: 256 << 10}

// slowEtcdOn slows every node's etcd link and every link between members
// down and records the fault.
func (s *scenario) slowEtcdOn() int {
	i := s.fault("slow", "etcd", "+25ms±5ms each way on every node and peer link")
	for _, n := range s.c.Nodes {
		n.EtcdLink.SetShape(proxy.Both, slowEtcd)
	}
	s.c.ShapePeers(slowEtcd)
	return i
}

func (s *scenario) slowEtcdOff(i int) {
	for _, n := range s.c.Nodes {
		n.EtcdLink.SetShape(proxy.Both, proxy.Shape{})
	}
	s.c.ShapePeers(proxy.Shape{})
	s.healed(i)
}

func (s *scenario) slowMemcachedOn() int {
	i := s.fault("slow", "memcached", "+20ms±10ms and 256KiB/s each way on the nodes' link")
	for _, ps := range s.c.Pool {
		ps.Proxy.SetShape(proxy.Both, slowMemcached)
	}
	return i
}

func (s *scenario) slowMemcachedOff(i int) {
	for _, ps := range s.c.Pool {
		ps.Proxy.SetShape(proxy.Both, proxy.Shape{})
	}
	s.healed(i)
}

// TestSlowEtcd adds about 50ms to every round trip to and between the etcd
// members, and kills the coordinator leader while etcd is slow: leases,
// group commits and the takeover all run on the slow links.
func TestSlowEtcd(t *testing.T) {
	s := start(t, "slow-etcd", setup{})
	i := s.slowEtcdOn()
	s.progress(20)
	n, st := s.leader()
	k := s.killNode(n)
	s.waitNewLeader(n.ID, st.Term)
	s.progress(20)
	s.restartNode(n, k)
	s.slowEtcdOff(i)
	s.progress(20)
	s.finish()
}

// TestSlowMemcached slows the nodes' link to memcached down (+20ms ±10ms
// and 256 KiB/s each way) while callers submit and wait for their tokens:
// writes land late, the watermark follows them, nothing runs ahead.
func TestSlowMemcached(t *testing.T) {
	s := start(t, "slow-memcached", setup{})
	i := s.slowMemcachedOn()
	s.progress(30)
	s.slowMemcachedOff(i)
	s.progress(10)
	s.finish()
}
