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
// ends. It watches the watermark key rather than polling; callers that wait
// often should share an AppliedWatcher.
func WaitApplied(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout, tok Token) error {
	return NewAppliedWatcher(cli, layout).Wait(ctx, tok)
}
