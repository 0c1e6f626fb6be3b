package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// progressEvery is how often fromHistory asks etcd whether its watch has
// caught up with the revision it reads to.
const progressEvery = 50 * time.Millisecond

// lastOp is the newest operation seen on a key.
type lastOp struct {
	tok tokenseq.Token
	idx int
	op  ops.Op
}

func (a lastOp) before(b lastOp) bool {
	if c := a.tok.Compare(b.tok); c != 0 {
		return c < 0
	}
	return a.idx < b.idx
}

// fromHistory reads every batch etcd's history still holds, from its
// compaction up to the present, with a watch (applied batches are deleted,
// their puts are history), and returns each key's newest applied
// operation as what the key should hold. Keys whose newest operation is
// past the applied watermark are left out and counted.
func (v *verifier) fromHistory(ctx context.Context) ([]string, map[string]want, int, error) {
	wm, upTo, err := tokenseq.Watermark(ctx, v.cfg.Etcd, v.cfg.Layout)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("verify: read the applied watermark: %w", err)
	}
	applied := make(map[string]lastOp)
	newest := make(map[string]lastOp)
	from := int64(1)
	for {
		compacted, err := v.watchHistory(ctx, from, upTo, func(kv *mvccpb.KeyValue) {
			b, err := ops.DecodeBatch(kv.Value)
			if err != nil {
				return // set aside by the applier; it wrote nothing
			}
			tok := tokenseq.Token{Revision: kv.ModRevision, Index: b.Index}
			for i, o := range b.Ops {
				if !legalKey(o.Key) {
					continue
				}
				lo := lastOp{tok: tok, idx: i, op: o}
				if cur, ok := newest[o.Key]; !ok || cur.before(lo) {
					newest[o.Key] = lo
				}
				if wm.Less(tok) {
					continue
				}
				if cur, ok := applied[o.Key]; !ok || cur.before(lo) {
					applied[o.Key] = lo
				}
			}
		})
		if err != nil {
			return nil, nil, 0, err
		}
		if compacted == 0 {
			break
		}
		from = compacted
	}
	keys := make([]string, 0, len(applied))
	wants := make(map[string]want, len(applied))
	pending := 0
	for k, lo := range applied {
		if n := newest[k]; lo.before(n) {
			pending++
			continue
		}
		w := want{known: true, present: lo.op.Kind == ops.KindSet}
		if w.present {
			w.value, w.expired = lo.op.Value, lo.op.Expiration > 0
		}
		keys = append(keys, k)
		wants[k] = w
	}
	for k := range newest {
		if _, ok := applied[k]; !ok {
			pending++
		}
	}
	slices.Sort(keys)
	return keys, wants, pending, nil
}

// watchHistory calls put with every batch put from revision from up to
// upTo; compacted is where to start again when etcd has compacted from
// (0 otherwise).
func (v *verifier) watchHistory(ctx context.Context, from, upTo int64, put func(*mvccpb.KeyValue)) (compacted int64, _ error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := v.cfg.Etcd.Watch(wctx, v.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(from))
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
			// etcd answers only once every watch of this client has
			// caught up; then no event at or below its revision is left.
			_ = v.cfg.Etcd.RequestProgress(wctx)
		case resp, ok := <-wch:
			if !ok {
				return 0, errors.New("verify: watch of etcd's history closed")
			}
			if resp.CompactRevision != 0 {
				return resp.CompactRevision, nil
			}
			if err := resp.Err(); err != nil {
				return 0, fmt.Errorf("verify: watch etcd's history: %w", err)
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision > upTo {
					return 0, nil
				}
				if ev.Type == mvccpb.PUT {
					put(ev.Kv)
				}
			}
			if resp.IsProgressNotify() && resp.Header.Revision >= upTo {
				return 0, nil
			}
		}
	}
}
