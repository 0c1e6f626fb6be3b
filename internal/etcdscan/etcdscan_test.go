package etcdscan_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// TestPrefixReadsEveryKeyOnceAtOneRevision checks that a scan in small
// pages returns every key under the prefix once, in order, nothing outside
// it, and none written after the scan started.
func TestPrefixReadsEveryKeyOnceAtOneRevision(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	for i := range 25 {
		if _, err := cli.Put(ctx, fmt.Sprintf("p/%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "q/outside", "v"); err != nil {
		t.Fatal(err)
	}
	var keys []string
	pages := 0
	rev, err := etcdscan.Prefix(ctx, cli, "p/", 10, func(page []*mvccpb.KeyValue) error {
		pages++
		if pages == 1 {
			// Written after the first page: the later pages must not see it.
			if _, err := cli.Put(ctx, "p/99", "late"); err != nil {
				return err
			}
		}
		for _, kv := range page {
			keys = append(keys, string(kv.Key))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 25 || pages != 3 {
		t.Fatalf("%d keys in %d pages, want 25 in 3: %v", len(keys), pages, keys)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("p/%02d", i); k != want {
			t.Fatalf("key %d = %q, want %q", i, k, want)
		}
	}
	if rev == 0 {
		t.Fatal("no revision returned")
	}
	stop := errors.New("stop")
	if _, err := etcdscan.Prefix(ctx, cli, "p/", 10, func([]*mvccpb.KeyValue) error { return stop }); err != stop {
		t.Fatalf("fn's error came back as %v", err)
	}
}
