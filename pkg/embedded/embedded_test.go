package embedded_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
)

// startMember starts a member with the given history retention, stopped at
// the end of the test, and returns a client of it and a context.
func startMember(t *testing.T, retention time.Duration) (context.Context, *clientv3.Client) {
	t.Helper()
	ctx := testenv.Ctx(t, 60*time.Second)
	srv, err := embedded.Start(ctx, embedded.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", LogLevel: "panic", HistoryRetention: retention})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return ctx, cli
}

// With a history retention, the member compacts its history on its own:
// a read at a revision older than the retention is refused as compacted,
// while the current value stays.
func TestHistoryRetentionCompacts(t *testing.T) {
	ctx, cli := startMember(t, time.Second)
	first, err := cli.Put(ctx, "k", "1")
	if err != nil {
		t.Fatal(err)
	}
	// Keep the revision moving, as a working deployment does, until the
	// first write's revision is compacted away.
	testenv.Eventually(t, 30*time.Second, func() bool {
		if _, err := cli.Put(ctx, "k", "2"); err != nil {
			t.Fatal(err)
		}
		_, err := cli.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
		if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatal(err)
		}
		return err != nil
	}, "the history was never compacted")
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("current value after compaction: %v %v", resp, err)
	}
}

// Without a history retention, the member keeps all history.
func TestNoHistoryRetentionKeepsHistory(t *testing.T) {
	ctx, cli := startMember(t, 0)
	first, err := cli.Put(ctx, "k", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("read at the first revision: %v %v", resp, err)
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	if _, err := embedded.Start(testenv.Ctx(t, 10*time.Second), embedded.Config{}); !errors.Is(err, config.ErrBadConfig) {
		t.Fatalf("Start without Dir = %v, want ErrBadConfig", err)
	}
}
