package tokenseq

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Watermark reads the applied watermark: the highest token such that it and
// every accepted token before it have been applied to memcached. It also
// returns the etcd revision the read was served at.
func Watermark(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout) (Token, int64, error) {
	resp, err := cli.Get(ctx, layout.Applied())
	if err != nil {
		return Zero, 0, fmt.Errorf("tokenseq: read watermark: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Zero, resp.Header.Revision, nil
	}
	t, err := ParseToken(string(resp.Kvs[0].Value))
	if err != nil {
		return Zero, resp.Header.Revision, fmt.Errorf("tokenseq: watermark record: %w", err)
	}
	return t, resp.Header.Revision, nil
}

// WaitApplied blocks until the applied watermark reaches tok (G8), or ctx
// ends. It watches the watermark key rather than polling.
func WaitApplied(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout, tok Token) error {
	for {
		cur, rev, err := Watermark(ctx, cli, layout)
		if err != nil {
			return err
		}
		if !cur.Less(tok) {
			return nil
		}
		if err := waitWatermarkChange(ctx, cli, layout, rev, tok); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The watch broke (compaction, member loss): read again.
			continue
		}
		return nil
	}
}

// waitWatermarkChange watches the watermark from rev+1 until it reaches tok.
func waitWatermarkChange(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout, rev int64, tok Token) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, layout.Applied(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			t, err := ParseToken(string(ev.Kv.Value))
			if err == nil && !t.Less(tok) {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("tokenseq: watermark watch closed")
}
