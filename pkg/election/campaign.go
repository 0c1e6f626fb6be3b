package election

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// campaign does what concurrency.Election.Campaign does on the prefix pfx:
// it puts this session's candidate key, then waits until every candidate
// key created before it is deleted. It returns the election, resumed on the
// key, that this node leads.
//
// The difference is how it waits for a key to go. etcd's Campaign watches
// from the revision of its last read, which is in the past as soon as
// anything else is written; etcd serves such a watch from its resync loop,
// which runs every 100 ms, so a deletion in a candidate's first 100 ms can
// reach it up to 100 ms late. A graceful handover to a node that has just
// started (a rolling restart) paid that wait. Here the watch starts at
// etcd's current revision, which etcd serves as events happen, and a read
// made once the watch exists tells whether the key went before it.
func campaign(ctx context.Context, s *concurrency.Session, pfx, val string) (*concurrency.Election, error) {
	cli := s.Client()
	key := fmt.Sprintf("%s/%x", pfx, s.Lease())
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(s.Lease()))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		// The session's key is there already: it keeps its place.
		rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	el := concurrency.ResumeElection(s, pfx, key, rev)
	if err := waitPredecessors(ctx, cli, pfx+"/", rev); err != nil {
		resign(el)
		return nil, err
	}
	return el, nil
}

// waitPredecessors waits until no key under pfx was created before
// revision rev.
func waitPredecessors(ctx context.Context, cli *clientv3.Client, pfx string, rev int64) error {
	opts := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1), clientv3.WithKeysOnly())
	for {
		resp, err := cli.Get(ctx, pfx, opts...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := waitDeleted(ctx, cli, string(resp.Kvs[0].Key)); err != nil {
			return err
		}
	}
}

// waitDeleted waits until key does not exist. Its watch starts at etcd's
// current revision; once etcd confirms it, a read tells whether the key is
// still there, in which case its deletion comes later and the watch sees it.
func waitDeleted(ctx context.Context, cli *clientv3.Client, key string) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, key, clientv3.WithCreatedNotify()) {
		if err := wr.Err(); err != nil {
			return err
		}
		if wr.Created {
			resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if resp.Count == 0 {
				return nil
			}
			continue
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("election: watch ended while waiting for a deletion")
}
