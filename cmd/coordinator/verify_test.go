package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// verify exits 0 on a pool that holds what its record says, 1 once a key
// is stale (the JSON naming it), 2 for misuse; a slow run writes its
// progress to stderr.
func TestVerifyCommand(t *testing.T) {
	env := startEtcd(t)
	m := testenv.StartMemcached(t)
	l := keyspace.MustNew(keyspace.DefaultNamespace)
	ctx := testenv.Ctx(t, 60*time.Second)
	if _, err := topology.Ensure(ctx, env.cli, l, topology.Topology{Distribution: hashring.Modula, Servers: []hashring.Server{{Addr: m.Addr}}}); err != nil {
		t.Fatal(err)
	}
	mc := memcache.New(m.Addr)
	defer mc.Close()
	keys := []string{"a", "b", "c", "d"}
	for _, k := range keys {
		rec, _ := json.Marshal(restore.Record{Value: []byte("v-" + k), Term: 2})
		if _, err := env.cli.Put(ctx, l.MemcachedValue(k), string(rec)); err != nil {
			t.Fatal(err)
		}
		if err := mc.Set(&memcache.Item{Key: k, Value: []byte("v-" + k), Flags: memfence.Flags(2)}); err != nil {
			t.Fatal(err)
		}
	}
	type report struct {
		Keys     int `json:"keys"`
		OK       int `json:"ok"`
		Stale    int `json:"stale"`
		Problems []struct {
			Key    string `json:"key"`
			Status string `json:"status"`
		} `json:"problems"`
	}
	r := runCLI(t, nil, env.args("verify", "-o", "json")...)
	var rep report
	if r.code != exitOK {
		t.Fatalf("verify of a clean pool: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	mustJSON(t, r.stdout, &rep)
	if rep.Keys != 4 || rep.OK != 4 || len(rep.Problems) != 0 {
		t.Fatalf("clean pool: %s", r.stdout)
	}

	if err := mc.Set(&memcache.Item{Key: "b", Value: []byte("v-b"), Flags: memfence.Flags(1)}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, nil, env.args("verify", "-o", "json")...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "1 stale") {
		t.Fatalf("verify of a stale key: exit %d\n%s", r.code, r.stderr)
	}
	rep = report{}
	mustJSON(t, r.stdout, &rep)
	if rep.Stale != 1 || len(rep.Problems) != 1 || rep.Problems[0].Key != "b" || rep.Problems[0].Status != "stale" {
		t.Fatalf("stale key: %s", r.stdout)
	}
	r = runCLI(t, nil, env.args("verify")...)
	if r.code != exitFailure || !strings.Contains(r.stdout, "b ") || !strings.Contains(r.stdout, "term 1, not 2") {
		t.Fatalf("table of a stale key: exit %d\n%s", r.code, r.stdout)
	}

	// Two keys a second: the second pair waits a second, and the
	// progress shows.
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("# keys\na\n\nc\nd\nnone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, nil, env.args("verify", "--keys", file, "--rate", "2", "-o", "json")...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "verify: 4 of 4 keys checked") {
		t.Fatalf("verify --keys: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	rep = report{}
	mustJSON(t, r.stdout, &rep)
	if rep.Keys != 4 || rep.OK != 3 || len(rep.Problems) != 1 || rep.Problems[0].Key != "none" || rep.Problems[0].Status != "missing" {
		t.Fatalf("verify --keys: %s", r.stdout)
	}

	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("a\nhas space\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		want string
		args []string
	}{
		{"--rate -1 is negative", []string{"--rate", "-1"}},
		{"--from must be record or history", []string{"--from", "elsewhere"}},
		{"give one of them", []string{"--from", "history", "--keys", file}},
		{"not a memcached key", []string{"--keys", bad}},
	} {
		r := runCLI(t, nil, env.args(append([]string{"verify"}, c.args...)...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "Usage: coordinator verify") {
			t.Errorf("verify %q: exit %d, want %d saying %q\n%s", c.args, r.code, exitUsage, c.want, r.stderr)
		}
	}
}
