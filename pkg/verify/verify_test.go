package verify_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/verify"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pool is a namespace led by one node with restore's record on, over three
// memcached servers with ketama; the third has 2 MB of memory, so that it
// can be made to evict.
type pool struct {
	cli     *clientv3.Client
	layout  keyspace.Layout
	ring    *hashring.Ring
	servers []*testenv.Memcached
	mcs     []*memcache.Client
	caller  *client.Caller
	c       *client.Client
	term    uint32
}

const ns = "verify"

func startPool(t *testing.T) *pool {
	t.Helper()
	_, cli := testenv.Etcd(t)
	p := &pool{cli: cli, layout: keyspace.MustNew(ns)}
	var hs []hashring.Server
	var addrs []string
	for i := range 3 {
		var m *testenv.Memcached
		if i == 2 {
			m = testenv.StartMemcached(t, "-m", "2")
		} else {
			m = testenv.StartMemcached(t)
		}
		p.servers = append(p.servers, m)
		hs = append(hs, hashring.Server{Addr: m.Addr})
		addrs = append(addrs, m.Addr)
		mc := memcache.New(m.Addr)
		t.Cleanup(func() { _ = mc.Close() })
		p.mcs = append(p.mcs, mc)
	}
	var err error
	if p.ring, err = hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: hs}); err != nil {
		t.Fatal(err)
	}
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: p.layout, NodeID: "a", Memcached: addrs, Distribution: hashring.Ketama, RestoreOnRestart: true})
	if p.c, err = client.New(client.Config{Etcd: cli, Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.c.Close() })
	if p.caller, err = p.c.Register(testenv.Ctx(t, 60*time.Second), "writer", client.RegisterConfig{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// apply submits batch and waits until it is applied.
func (p *pool) apply(t *testing.T, batch ...ops.Op) {
	t.Helper()
	ctx := testenv.Ctx(t, 60*time.Second)
	tok, err := p.caller.Submit(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.c.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
}

// owner is the index of key's server.
func (p *pool) owner(key string) int { return p.ring.Index(key) }

// keyOn returns the first key of keys whose server is s and that is not in
// used, and marks it used.
func keyOn(t *testing.T, p *pool, keys []string, s int, used map[string]bool) string {
	t.Helper()
	for _, k := range keys {
		if p.owner(k) == s && !used[k] {
			used[k] = true
			return k
		}
	}
	t.Fatalf("no free key on server %d", s)
	return ""
}

func (p *pool) get(t *testing.T, s int, key string) *memcache.Item {
	t.Helper()
	it, err := p.mcs[s].Get(key)
	if err != nil {
		t.Fatalf("get %q from server %d: %v", key, s, err)
	}
	return it
}

func (p *pool) set(t *testing.T, s int, it *memcache.Item) {
	t.Helper()
	if err := p.mcs[s].Set(it); err != nil {
		t.Fatalf("set %q on server %d: %v", it.Key, s, err)
	}
}

func (p *pool) del(t *testing.T, s int, key string) {
	t.Helper()
	if err := p.mcs[s].Delete(key); err != nil {
		t.Fatalf("delete %q from server %d: %v", key, s, err)
	}
}

// fill stores n small items on addr, pipelined without replies, and
// waits for memcached to have taken them all.
func fill(t *testing.T, addr string, n int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "set junk-%06d 0 0 12 noreply\r\nvalue-%06d\r\n", i, i)
	}
	b.WriteString("mn\r\n")
	if _, err := c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "MN\r\n" {
		t.Fatalf("fill %s: %q, %v", addr, line, err)
	}
}

func run(t *testing.T, cfg verify.Config) *verify.Report {
	t.Helper()
	rep, err := verify.Run(testenv.Ctx(t, 60*time.Second), cfg)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func byKey(rep *verify.Report) map[string]verify.KeyResult {
	m := make(map[string]verify.KeyResult)
	for _, r := range rep.Problems {
		m[r.Key] = r
	}
	return m
}

// TestVerifyReportsEachKind plants every kind of fault verify tells apart
// in a pool a node wrote, and checks each is reported as what it is, from
// restore's record, from etcd's history and from a list of keys.
func TestVerifyReportsEachKind(t *testing.T) {
	p := startPool(t)
	var keys []string
	var batch []ops.Op
	for i := range 300 {
		k := fmt.Sprintf("k-%03d", i)
		keys = append(keys, k)
		batch = append(batch, ops.Set(k, []byte("value-"+k), 0))
	}
	used := map[string]bool{}
	expiring := keyOn(t, p, keys, 0, used)
	deleted := keyOn(t, p, keys, 1, used)
	batch = append(batch, ops.Set(expiring, []byte("short"), time.Hour))
	p.apply(t, batch...)
	p.apply(t, ops.Delete(deleted))
	p.term = memfence.TermOf(p.get(t, 0, keyOn(t, p, keys, 0, used)).Flags)

	cfg := verify.Config{Etcd: p.cli, Layout: p.layout, Unpaced: true}
	rep := run(t, cfg)
	if !rep.Clean() || rep.Keys != 299 || rep.OK != 299 || rep.Err() != nil {
		t.Fatalf("a pool as applied: %+v", rep)
	}

	// Plant each kind on servers 0 and 1; server 2 is made to evict.
	lost := keyOn(t, p, keys, 0, used)
	p.del(t, 0, lost)
	p.del(t, 0, expiring)
	olderTerm := keyOn(t, p, keys, 1, used)
	it := p.get(t, 1, olderTerm)
	it.Flags = memfence.Flags(p.term - 1)
	p.set(t, 1, it)
	otherValue := keyOn(t, p, keys, 0, used)
	it = p.get(t, 0, otherValue)
	it.Value = []byte("not what was applied")
	p.set(t, 0, it)
	misplaced := keyOn(t, p, keys, 0, used)
	it = p.get(t, 0, misplaced)
	p.del(t, 0, misplaced)
	p.set(t, 1, it)
	stray := keyOn(t, p, keys, 1, used)
	it = p.get(t, 1, stray)
	p.set(t, 0, it)
	recreated := &memcache.Item{Key: deleted, Value: []byte("value-" + deleted), Flags: memfence.Flags(p.term)}
	p.set(t, 1, recreated)
	// Items of the coordinator's size, through 2 MB of memory (one slab
	// class evicts its own): server 2 evicts the oldest, the
	// coordinator's keys.
	fill(t, p.servers[2].Addr, 60000)

	// Expiries compared with a clock two hours on.
	cfg.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	rep = run(t, cfg)
	got := byKey(rep)
	want := map[string]struct {
		status verify.Status
		cause  verify.Cause
	}{
		lost:       {verify.StatusMissing, verify.CauseLost},
		olderTerm:  {verify.StatusStale, ""},
		otherValue: {verify.StatusStale, ""},
		misplaced:  {verify.StatusMisplaced, ""},
		stray:      {verify.StatusOK, ""},
	}
	for k, w := range want {
		if r, ok := got[k]; !ok || r.Status != w.status || r.Cause != w.cause {
			t.Errorf("%s: reported %+v, want %s %s", k, r, w.status, w.cause)
		}
	}
	if r := got[misplaced]; len(r.Strays) != 1 || r.Strays[0] != p.servers[1].Addr || r.Server != p.servers[0].Addr {
		t.Errorf("misplaced key: %+v, want it on %s, not %s", r, p.servers[1].Addr, p.servers[0].Addr)
	}
	if r := got[stray]; len(r.Strays) != 1 || r.Strays[0] != p.servers[0].Addr {
		t.Errorf("stray copy: %+v, want one on %s", r, p.servers[0].Addr)
	}
	if _, ok := got[expiring]; ok {
		t.Errorf("an expired key is listed as a problem: %+v", got[expiring])
	}
	evicted := 0
	for _, r := range rep.Problems {
		if r.Cause != verify.CauseEvicted {
			continue
		}
		evicted++
		if r.Server != p.servers[2].Addr || r.Status != verify.StatusMissing {
			t.Errorf("evicted key %+v not on the server that evicted", r)
		}
	}
	if evicted == 0 || rep.Servers[2].Evictions == 0 {
		t.Errorf("no key reported evicted (servers %+v)", rep.Servers)
	}
	if rep.Expired != 1 || rep.Stale != 2 || rep.Misplaced != 1 || rep.Strays != 1 || rep.Missing != 2+evicted {
		t.Errorf("counts: %+v", rep)
	}
	if err := rep.Err(); !errors.Is(err, verify.ErrInconsistent) {
		t.Errorf("Err() = %v, want ErrInconsistent", err)
	}

	// etcd's history holds every batch: the delete of a key that is back
	// is stale there (the record has nothing of a deleted key).
	rep = run(t, verify.Config{Etcd: p.cli, Layout: p.layout, Source: verify.SourceHistory, Unpaced: true})
	got = byKey(rep)
	if r := got[deleted]; r.Status != verify.StatusStale || !strings.Contains(r.Detail, "delete") {
		t.Errorf("history: key back after its delete: %+v", r)
	}
	if r := got[otherValue]; r.Status != verify.StatusStale {
		t.Errorf("history: key of another value: %+v", r)
	}
	if _, ok := got[expiring]; ok || rep.Expired != 1 {
		t.Errorf("history: key set with a lifetime and gone: %+v, %d expired", got[expiring], rep.Expired)
	}
	if rep.Keys != 300 {
		t.Errorf("history: %d keys, want 300", rep.Keys)
	}

	// A list of keys: a key without a record is checked for its place.
	unknown := "no-record"
	for p.owner(unknown) == 1 {
		unknown += "x"
	}
	p.set(t, 1, &memcache.Item{Key: unknown, Value: []byte("v")})
	rep = run(t, verify.Config{Etcd: p.cli, Layout: p.layout, Keys: []string{unknown, olderTerm, keys[len(keys)-1]}, Rate: 100})
	got = byKey(rep)
	if rep.Source != verify.SourceKeys || rep.Keys != 3 || got[unknown].Status != verify.StatusMisplaced || got[olderTerm].Status != verify.StatusStale {
		t.Errorf("keys: %+v", rep)
	}
}

// TestVerifyConfigErrors: every misuse is a *config.FieldError, a bad key
// also ErrBadKey, and an empty record ErrNoKeys.
func TestVerifyConfigErrors(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew(ns)
	for _, c := range []verify.Config{
		{Layout: l},
		{Etcd: cli},
		{Etcd: cli, Layout: l, Rate: -1},
		{Etcd: cli, Layout: l, Source: "elsewhere"},
		{Etcd: cli, Layout: l, Source: verify.SourceHistory, Keys: []string{"a"}},
	} {
		var fe *config.FieldError
		if err := c.Validate(); !errors.As(err, &fe) || !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("%+v: %v, want a *config.FieldError", c, err)
		}
	}
	c := verify.Config{Etcd: cli, Layout: l, Keys: []string{"good", "has space"}}
	if err := c.Validate(); !errors.Is(err, verify.ErrBadKey) {
		t.Errorf("a key with a space: %v, want ErrBadKey", err)
	}
	m := testenv.StartMemcached(t)
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: []string{m.Addr}})
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := verify.Run(testenv.Ctx(t, 10*time.Second), verify.Config{Etcd: cli, Layout: l})
		return errors.Is(err, verify.ErrNoKeys)
	}, "verify of a namespace without records did not say ErrNoKeys")
}
