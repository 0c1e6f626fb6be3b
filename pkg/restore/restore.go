// Package restore keeps, in etcd, the latest value the leader wrote to each
// memcached key, and writes a restarted server's keys back from it.
//
// With node.Config.RestoreOnRestart, every round's writes are recorded
// under keyspace.Layout.MemcachedValuesPrefix() after they are made in
// memcached and before the round is committed (applier.Config.BeforeCommit),
// in transactions guarded by the leadership: a set puts
//
//	<root>/<namespace>/memcached/values/<key>  {"value":"<base64>","term":3,"token":"1234.0","expires":1796308848}
//
// and a delete deletes it. So a record is never older than what memcached
// holds of its key: a round is recorded after it is written, and the next
// round is written only after that. A record may be ahead of the applied
// watermark (a round written and recorded but not committed when its
// leader stopped); the next leader replays that round, writing the same
// values. A former leader cannot record: its guard fails.
//
// Restore runs while the leader applies nothing (between rounds): it reads
// the records and writes back, to one server, every key the current ring
// places there, fenced by the record's term (a newer term already there
// wins). Since nothing else writes meanwhile and a record is the newest
// value the leader wrote, no key gets a value older than the one it held.
package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Record is the value kept of one memcached key.
type Record struct {
	// Value is the value written.
	Value []byte `json:"value"`
	// Term is the term it was written under (memfence.TermOf its item
	// flags); topology.ResetTerm sets it to 0.
	Term uint32 `json:"term"`
	// Token is the token of the operation that wrote it.
	Token tokenseq.Token `json:"token"`
	// Expires is when the item expires, unix seconds; zero when never.
	Expires int64 `json:"expires,omitempty"`
}

// maxTxnOps bounds one record transaction (etcd's default --max-txn-ops).
const maxTxnOps = tokenseq.MaxTxnOps

// Keep returns an applier.Config.BeforeCommit that records writes under l,
// guarded by lead, the leadership the applier runs under.
func Keep(cli *clientv3.Client, l keyspace.Layout, lead *election.Leadership) func(context.Context, []applier.Write) error {
	return func(ctx context.Context, writes []applier.Write) error {
		now := time.Now()
		for len(writes) > 0 {
			n := min(len(writes), maxTxnOps)
			txn := make([]clientv3.Op, 0, n)
			for _, w := range writes[:n] {
				key := l.MemcachedValue(w.Op.Key)
				if w.Op.Kind == ops.KindDelete {
					txn = append(txn, clientv3.OpDelete(key))
					continue
				}
				r := Record{Value: w.Op.Value, Term: w.Term, Token: w.Token}
				if w.Op.Expiration > 0 {
					r.Expires = now.Add(w.Op.Expiration).Unix()
				}
				b, err := json.Marshal(r)
				if err != nil {
					return err
				}
				txn = append(txn, clientv3.OpPut(key, string(b)))
			}
			resp, err := cli.Txn(ctx).If(lead.Guard()).Then(txn...).Commit()
			if err != nil {
				return fmt.Errorf("restore: record %d values: %w", n, err)
			}
			if !resp.Succeeded {
				return election.ErrNotLeader
			}
			writes = writes[n:]
		}
		return nil
	}
}

// Result counts what Restore did.
type Result struct {
	// Records counts the records read.
	Records int
	// Restored counts the keys written back.
	Restored int
	// Newer counts the keys that held a newer term and were left alone.
	Newer int
	// Expired counts the records past their expiry, not written.
	Expired int
}

// errStopped ends the scan of the records early; the reason is kept aside.
var errStopped = errors.New("restore: stopped")

// pageSize bounds one read of the records.
const pageSize = 1000

// Restore writes back to the server addr every key that mw (the leader's
// writer over the current ring) places there, from the records under l,
// while lead is valid. It must run while the leader writes nothing else.
func Restore(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, lead *election.Leadership, mw *memfence.Writer, addr string) (Result, error) {
	var res Result
	// stopped is why the scan was ended by a record rather than by etcd.
	var stopped error
	prefix := l.MemcachedValuesPrefix()
	_, err := etcdscan.Prefix(ctx, cli, prefix, pageSize, func(page []*mvccpb.KeyValue) error {
		now := time.Now().Unix()
		for _, kv := range page {
			res.Records++
			key := strings.TrimPrefix(string(kv.Key), prefix)
			if owner, err := mw.PickServer(key); err != nil || owner != addr {
				continue
			}
			var r Record
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				continue
			}
			if r.Expires != 0 && r.Expires <= now {
				res.Expired++
				continue
			}
			if !lead.Valid() {
				stopped = election.ErrNotLeader
				return errStopped
			}
			err := mw.Set(ctx, key, r.Value, int32(r.Expires), r.Term)
			switch {
			case errors.Is(err, memfence.ErrFenced):
				res.Newer++
			case errors.Is(err, memfence.ErrRejected):
			case err != nil:
				stopped = fmt.Errorf("restore: write %q back to %s: %w", key, addr, err)
				return errStopped
			default:
				res.Restored++
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopped) {
		return res, fmt.Errorf("restore: read records: %w", err)
	}
	return res, stopped
}
