package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// TestSubmitBadInputWritesNothing runs every bad input of the contract
// through submit: each exits 2 with a usage line and a message naming the
// problem, and leaves etcd untouched (no key, no lease, same revision).
func TestSubmitBadInputWritesNothing(t *testing.T) {
	env := startEtcd(t)
	big := bytes.Repeat([]byte("v"), ops.DefaultMaxItemBytes)
	huge := bytes.Repeat([]byte("v"), 2*ops.DefaultMaxItemBytes)
	cases := []struct {
		name  string
		stdin io.Reader
		args  []string
		want  string
	}{
		{name: "empty key", args: []string{"submit", "--as", "a", "set", "", "v"}, want: "key is empty"},
		{name: "empty key on delete", args: []string{"submit", "--as", "a", "delete", ""}, want: "key is empty"},
		{name: "key over 250 bytes", args: []string{"submit", "--as", "a", "set", strings.Repeat("k", 251), "v"}, want: "longer than 250 bytes"},
		{name: "key with space", args: []string{"submit", "--as", "a", "set", "a b", "v"}, want: "whitespace or a control character"},
		{name: "key with tab", args: []string{"submit", "--as", "a", "delete", "a\tb"}, want: "whitespace or a control character"},
		{name: "key with control char", args: []string{"submit", "--as", "a", "set", "a\x01b", "v"}, want: "whitespace or a control character"},
		{name: "key with DEL", args: []string{"submit", "--as", "a", "set", "a\x7fb", "v"}, want: "whitespace or a control character"},
		{name: "value at the item size from stdin", stdin: bytes.NewReader(big), args: []string{"submit", "--as", "a", "set", "k", "-"}, want: "over the maximum item size"},
		{name: "value over the item size from stdin", stdin: bytes.NewReader(huge), args: []string{"submit", "--as", "a", "set", "k", "-"}, want: "over the maximum item size"},
		{name: "value over a smaller item size", args: []string{"submit", "--as", "a", "--max-item-bytes", "1024", "set", "k", strings.Repeat("v", 1000)}, want: "over the maximum item size"},
		{name: "negative expire seconds", args: []string{"submit", "--as", "a", "set", "k", "v", "--expire", "-5"}, want: "expiration is negative"},
		{name: "negative expire duration", args: []string{"submit", "--as", "a", "set", "k", "v", "--expire=-1m"}, want: "expiration is negative"},
		{name: "expire over 30 days in hours", args: []string{"submit", "--as", "a", "set", "k", "v", "--expire", "721h"}, want: "expiration is too long"},
		{name: "empty name", args: []string{"submit", "--as", "", "set", "k", "v"}, want: "name is empty"},
		{name: "name with slash", args: []string{"submit", "--as", "a/b", "set", "k", "v"}, want: "'/'"},
		{name: "name with space", args: []string{"submit", "--as", "a b", "set", "k", "v"}, want: "whitespace"},
		{name: "name with newline", args: []string{"submit", "--as", "a\nb", "delete", "k"}, want: "whitespace"},
		{name: "name over 128 bytes", args: []string{"submit", "--as", strings.Repeat("n", keyspace.MaxNameBytes+1), "set", "k", "v"}, want: "longer than 128 bytes"},
		{name: "unknown op", args: []string{"submit", "--as", "a", "incr", "k"}, want: "unknown operation kind"},
		{name: "unknown flag", args: []string{"submit", "--as", "a", "set", "k", "v", "--bogus"}, want: "unknown flag"},
		{name: "unknown flag before op", args: []string{"submit", "--flags", "1", "--as", "a", "set", "k", "v"}, want: "unknown flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := env.snapshot(t)
			r := runCLI(t, tc.stdin, env.args(tc.args...)...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, exitUsage, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, "Usage:") {
				t.Errorf("stderr has no usage line:\n%s", r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not name the problem (%q):\n%s", tc.want, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout is not empty: %q", r.stdout)
			}
			env.assertNothingWritten(t, before)
		})
	}
}

// TestSubmitUsageErrors checks that command-line misuse of submit exits 2
// with a usage line, before anything is sent to etcd.
func TestSubmitUsageErrors(t *testing.T) {
	env := startEtcd(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{name: "no --as", args: []string{"submit", "set", "k", "v"}, want: "--as NAME is required"},
		{name: "no operation", args: []string{"submit", "--as", "a"}, want: "missing operation"},
		{name: "set without value", args: []string{"submit", "--as", "a", "set", "k"}, want: "set takes KEY and VALUE"},
		{name: "set with extra argument", args: []string{"submit", "--as", "a", "set", "k", "v", "w"}, want: "set takes KEY and VALUE"},
		{name: "delete without key", args: []string{"submit", "--as", "a", "delete"}, want: "delete takes KEY"},
		{name: "delete with extra argument", args: []string{"submit", "--as", "a", "delete", "k", "v"}, want: "delete takes KEY"},
		{name: "expire on delete", args: []string{"submit", "--as", "a", "delete", "k", "--expire", "5"}, want: "--expire applies to set only"},
		{name: "malformed expire", args: []string{"submit", "--as", "a", "set", "k", "v", "--expire", "soon"}, want: "invalid argument"},
		{name: "expire without value", args: []string{"submit", "--as", "a", "set", "k", "v", "--expire"}, want: "flag needs an argument"},
		{name: "ttl under 1s", args: []string{"submit", "--as", "a", "--ttl", "500ms", "set", "k", "v"}, want: "--ttl"},
		{name: "malformed ttl", args: []string{"submit", "--as", "a", "--ttl", "ten", "set", "k", "v"}, want: "invalid argument"},
		{name: "negative wait timeout", args: []string{"submit", "--as", "a", "--wait", "--wait-timeout", "-1s", "set", "k", "v"}, want: "--wait-timeout"},
		{name: "tiny max item bytes", args: []string{"submit", "--as", "a", "--max-item-bytes", "10", "set", "k", "v"}, want: "--max-item-bytes"},
		{name: "malformed bool", args: []string{"submit", "--as", "a", "--wait=maybe", "set", "k", "v"}, want: "invalid argument"},
		{name: "yaml output", args: []string{"submit", "--as", "a", "-o", "yaml", "set", "k", "v"}, want: "table or json"},
		{name: "bad namespace", args: []string{"submit", "--namespace", "a/b", "--as", "a", "set", "k", "v"}, want: "--namespace"},
		{name: "empty endpoints", args: []string{"submit", "--as", "a", "set", "k", "v", "--endpoints", " , "}, want: "--endpoints is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env.assertUsageError(t, "coordinator submit", tc.want, tc.args...)
		})
	}
}

// TestSubmitAcceptsValidInput is the control of the nothing-written checks:
// valid input through the same path does reach etcd, including a value of
// exactly the largest size allowed, read from stdin, and an expiration in
// plain seconds.
func TestSubmitAcceptsValidInput(t *testing.T) {
	env := startEtcd(t)
	key := "k"
	value := bytes.Repeat([]byte{0, 1, 2, 0xff}, ops.DefaultMaxItemBytes)[:ops.DefaultMaxItemBytes-ops.ItemOverheadBytes-len(key)]
	before := env.snapshot(t)
	r := runCLI(t, bytes.NewReader(value), env.args("submit", "--as", "writer", "set", key, "-", "--expire", "30", "-o", "json")...)
	if r.code != exitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
	if got["name"] != "writer" || got["applied"] != false {
		t.Errorf("output %v: want name writer, applied false", got)
	}
	tok, ok := got["token"].(string)
	if !ok || tok == "" {
		t.Fatalf("token %v is not a string", got["token"])
	}
	if _, ok := got["incarnation"].(string); !ok {
		t.Errorf("incarnation %v is not a string", got["incarnation"])
	}

	after := env.snapshot(t)
	if after.rev <= before.rev {
		t.Errorf("revision did not move (%d -> %d): the control wrote nothing", before.rev, after.rev)
	}
	// The batch stays (no node applies it); the registration is gone, as
	// submit unregisters when done.
	if len(after.keys) != 1 || !strings.HasPrefix(after.keys[0], keyspace.MustNew("default").OpsPrefix()+"writer/") {
		t.Fatalf("keys after submit: %q, want one batch of writer", after.keys)
	}
	if after.leases != before.leases {
		t.Errorf("submit left %d leases behind", after.leases-before.leases)
	}
	resp, err := env.cli.Get(context.Background(), after.keys[0])
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read the batch: %v", err)
	}
	if wantTok := formatRev(resp.Kvs[0].ModRevision); tok != wantTok {
		t.Errorf("token %s, want the revision of the batch %s", tok, wantTok)
	}
}

// TestExpireFlag checks the forms --expire accepts.
func TestExpireFlag(t *testing.T) {
	for in, want := range map[string]string{"30": "30s", "0": "0", "30s": "30s", "1m30s": "1m30s", "-5": "-5s", "2h": "2h0m0s"} {
		var e expireFlag
		if err := e.Set(in); err != nil {
			t.Errorf("Set(%q): %v", in, err)
			continue
		}
		if e.String() != want {
			t.Errorf("Set(%q) = %s, want %s", in, e.String(), want)
		}
	}
	for _, in := range []string{"", "soon", "5 s", "99999999999999999"} {
		var e expireFlag
		if err := e.Set(in); err == nil {
			t.Errorf("Set(%q) = %s, want an error", in, e.String())
		}
	}
}
