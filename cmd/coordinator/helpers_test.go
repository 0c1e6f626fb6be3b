package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// result is the outcome of one in-process run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI in-process with stdin and returns what it printed and
// its exit status.
func runCLI(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, stdin, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// etcdEnv is an embedded etcd the CLI is pointed at.
type etcdEnv struct {
	cli       *clientv3.Client
	endpoints string
}

func startEtcd(t *testing.T) *etcdEnv {
	t.Helper()
	srv, cli := testenv.Etcd(t)
	return &etcdEnv{cli: cli, endpoints: strings.Join(srv.Endpoints(), ",")}
}

// args prepends --endpoints of this etcd to args.
func (e *etcdEnv) args(args ...string) []string {
	return append([]string{"--endpoints", e.endpoints, "--dial-timeout", "10s"}, args...)
}

// snapshot is what the nothing-written checks compare: the store revision
// (any put or delete moves it), the keys under the coordinator's root and
// the leases granted.
type snapshot struct {
	rev    int64
	keys   []string
	leases int
}

func (e *etcdEnv) snapshot(t *testing.T) snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, keyspace.Root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("read etcd: %v", err)
	}
	s := snapshot{rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		s.keys = append(s.keys, string(kv.Key))
	}
	leases, err := e.cli.Leases(ctx)
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	s.leases = len(leases.Leases)
	return s
}

// assertNothingWritten fails the test if etcd holds anything under the
// coordinator's root, a lease, or moved since before.
func (e *etcdEnv) assertNothingWritten(t *testing.T, before snapshot) {
	t.Helper()
	after := e.snapshot(t)
	if len(after.keys) != 0 {
		t.Errorf("etcd holds keys under %s: %q", keyspace.Root, after.keys)
	}
	if after.rev != before.rev {
		t.Errorf("etcd revision moved from %d to %d", before.rev, after.rev)
	}
	if after.leases != before.leases {
		t.Errorf("leases went from %d to %d", before.leases, after.leases)
	}
}

// assertUsageError runs the CLI with args and checks that it exits 2 with
// usage (a "Usage:" line naming usage, e.g. "coordinator submit") and a
// message containing want, and that nothing was written to etcd.
func (e *etcdEnv) assertUsageError(t *testing.T, usage, want string, args ...string) {
	t.Helper()
	before := e.snapshot(t)
	r := runCLI(t, nil, e.args(args...)...)
	if r.code != exitUsage {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, exitUsage, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "Usage: "+usage) {
		t.Errorf("stderr has no usage line %q:\n%s", "Usage: "+usage, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
	}
	e.assertNothingWritten(t, before)
}
