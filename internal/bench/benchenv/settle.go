package benchenv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Settle waits until nothing is pending in the namespace (a node applies
// what is left) and stops every node, so each scenario starts alike.
func (e *Env) Settle(ctx context.Context) error {
	n, err := e.Pending(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		if err := e.StartNode(ctx); err != nil {
			return err
		}
		if err := e.WaitNothingPending(ctx); err != nil {
			return err
		}
	}
	e.StopNode()
	e.StopChildren()
	return e.CompactOwnEtcd(ctx)
}

// CompactOwnEtcd compacts the history of the etcd the run started itself
// (never one it was pointed at) up to the applied watermark, as a
// deployment that compacts does: every batch is a new etcd key, and the
// deleted ones a scenario leaves in etcd's index would slow the next
// scenario, ours and the baselines alike. The history from the watermark
// on, which a new leader reads, is kept.
func (e *Env) CompactOwnEtcd(ctx context.Context) error {
	if e.srv == nil {
		return nil
	}
	wm, _, err := tokenseq.Watermark(ctx, e.Etcd, e.Layout)
	if err != nil {
		return err
	}
	if wm.Revision <= 1 {
		return nil
	}
	// Physical: wait until etcd has removed the old revisions, which it
	// does in the background, so that the next measurement does not share
	// etcd with that work.
	_, err = e.Etcd.Compact(ctx, wm.Revision, clientv3.WithCompactPhysical())
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("compact the embedded etcd: %w", err)
	}
	return nil
}

// WaitNothingPending waits until no batch is pending: it reads the newest
// pending batch and waits for the applied watermark to cover it, on the
// client's shared watermark watch, until a read finds none. (Counting the
// pending batches after every change would cost a count per applied round,
// each walking the deleted keys etcd still holds, and a watch that etcd
// serves from its resync loop.)
func (e *Env) WaitNothingPending(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var covered client.Token // the newest pending batch the watermark covered
	for {
		resp, err := e.Etcd.Get(ctx, e.Layout.OpsPrefix(), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		kv := resp.Kvs[0]
		index, err := ops.RecordIndex(kv.Value)
		if err != nil {
			index = 0 // a bad record: the leader sets it aside in its round
		}
		newest := client.Token{Revision: kv.ModRevision, Index: index}
		if newest == covered {
			// Still there although covered: a record being set aside
			// again. Wait for the next change rather than read in a loop.
			if err := waitChange(ctx, e.Etcd, e.Layout.OpsPrefix(), resp.Header.Revision); err != nil {
				return err
			}
			continue
		}
		if err := e.Client.WaitApplied(ctx, newest); err != nil {
			return err
		}
		covered = newest
	}
}
