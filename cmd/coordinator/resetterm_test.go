package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// topology reset-term refuses while a node campaigns (exit 1, saying what
// to do), and with every node stopped re-stamps the pool's items with term
// 0 and deletes the term key.
func TestTopologyResetTerm(t *testing.T) {
	env := startEtcd(t)
	m := testenv.StartMemcached(t)
	l := keyspace.MustNew(keyspace.DefaultNamespace)
	ctx := testenv.Ctx(t, 60*time.Second)
	if _, err := topology.Ensure(ctx, env.cli, l, topology.Topology{Distribution: hashring.Modula, Servers: []hashring.Server{{Addr: m.Addr}}}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := env.cli.Put(ctx, l.Term(), "n"); err != nil {
			t.Fatal(err)
		}
	}
	mc := memcache.New(m.Addr)
	defer mc.Close()
	if err := mc.Set(&memcache.Item{Key: "k", Value: []byte("v"), Flags: memfence.Flags(3)}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cli.Put(ctx, l.Election()+"/n", "{}"); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, env.args("topology", "reset-term")...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "stop every node") {
		t.Fatalf("reset-term with a node campaigning: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := env.cli.Delete(ctx, l.Election()+"/n"); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, nil, env.args("topology", "reset-term", "-o", "json")...)
	if r.code != exitOK {
		t.Fatalf("reset-term: exit %d\n%s", r.code, r.stderr)
	}
	var out struct {
		Namespace string `json:"namespace"`
		Term      uint64 `json:"term"`
		Keys      int    `json:"keys"`
		Restamped int    `json:"restamped"`
	}
	mustJSON(t, r.stdout, &out)
	if out.Namespace != "default" || out.Term != 3 || out.Keys != 1 || out.Restamped != 1 {
		t.Fatalf("reset-term printed %s", r.stdout)
	}
	if it, err := mc.Get("k"); err != nil || string(it.Value) != "v" || it.Flags != 0 {
		t.Fatalf("k after reset-term: %+v, %v", it, err)
	}
	if resp, err := env.cli.Get(ctx, l.Term()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the term key after reset-term: %v, %v", resp, err)
	}
}

// status warns on stderr once fewer than 1000 terms are left.
func TestWarnTermHeadroom(t *testing.T) {
	var b bytes.Buffer
	warnTermHeadroom(&b, 64535)
	if b.Len() != 0 {
		t.Fatalf("warned with 1000 terms left: %q", b.String())
	}
	warnTermHeadroom(&b, 65000)
	if !strings.Contains(b.String(), "535 terms left") || !strings.Contains(b.String(), "reset-term") {
		t.Fatalf("warning %q", b.String())
	}
}
