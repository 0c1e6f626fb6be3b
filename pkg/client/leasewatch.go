package client

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// errRegDeleted is the cause of a lease loss seen as the deletion of the
// registration.
var errRegDeleted = fmt.Errorf("%w: registration deleted", registry.ErrLeaseLost)

// leaseVerdict is what a leaseWatcher learnt about its incarnation. The
// zero verdict means nothing: the watch ended first.
type leaseVerdict struct {
	lost error // the incarnation is dead, for this reason
	by   int64 // the incarnation was superseded by this one
}

func (v leaseVerdict) settled() bool { return v.lost != nil || v.by != 0 }

// leaseWatcher follows the registration key of one incarnation until it
// learns that the incarnation is dead (the key was deleted: the lease
// ended; or the keep-alive stopped) or superseded (the key was put by
// someone else).
type leaseWatcher struct {
	etcd *clientv3.Client
	key  string
	inc  *registry.Incarnation
}

// run watches until it has a verdict or ctx ends. A watch that breaks
// (compaction, no etcd leader) is followed by a read of the key, and
// reopened from there.
func (w *leaseWatcher) run(ctx context.Context) leaseVerdict {
	rev := w.inc.Incarnation + 1
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: 2 * time.Second}
	for {
		if v, ended := w.watchFrom(ctx, rev); ended {
			return v
		}
		if !retry.Sleep(ctx, backoff.Next()) {
			return leaseVerdict{}
		}
		v, next, err := w.read(ctx)
		switch {
		case err != nil:
			continue
		case v.settled():
			return v
		}
		rev = next
		backoff.Reset()
	}
}

// watchFrom watches the key from revision rev. It returns ended false when
// the watch broke before a verdict.
func (w *leaseWatcher) watchFrom(ctx context.Context, rev int64) (v leaseVerdict, ended bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.etcd.Watch(wctx, w.key, clientv3.WithRev(rev))
	for {
		select {
		case <-ctx.Done():
			return leaseVerdict{}, true
		case <-w.inc.Done():
			return leaseVerdict{lost: w.inc.Err()}, true
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return leaseVerdict{}, false
			}
			for _, ev := range wr.Events {
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					return leaseVerdict{lost: errRegDeleted}, true
				case ev.Kv.ModRevision != w.inc.Incarnation:
					return leaseVerdict{by: ev.Kv.ModRevision}, true
				}
				return leaseVerdict{}, true
			}
		}
	}
}

// read reads the key: a verdict when the incarnation is gone or replaced,
// otherwise the revision to watch from.
func (w *leaseWatcher) read(ctx context.Context) (leaseVerdict, int64, error) {
	resp, err := w.etcd.Get(ctx, w.key)
	if err != nil {
		return leaseVerdict{}, 0, err
	}
	switch {
	case len(resp.Kvs) == 0:
		return leaseVerdict{lost: errRegDeleted}, 0, nil
	case resp.Kvs[0].ModRevision != w.inc.Incarnation:
		return leaseVerdict{by: resp.Kvs[0].ModRevision}, 0, nil
	}
	return leaseVerdict{}, resp.Header.Revision + 1, nil
}
