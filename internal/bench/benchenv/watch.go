package benchenv

import (
	"context"
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitPrefixCount waits until the number of keys under prefix satisfies
// ok, reading the count again on every change (a watch, not a poll).
func waitPrefixCount(ctx context.Context, cli *clientv3.Client, prefix string, ok func(int64) bool) error {
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if ok(resp.Count) {
			return nil
		}
		if err := waitChange(ctx, cli, prefix, resp.Header.Revision); err != nil {
			return err
		}
	}
}

// waitChange returns after the first change under prefix after rev.
func waitChange(ctx context.Context, cli *clientv3.Client, prefix string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}
