package inspect

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// PendingOp is one operation waiting to be applied.
type PendingOp struct {
	// Token is its batch's token.
	Token tokenseq.Token `json:"token"`
	// Index is its position in the batch.
	Index int `json:"index"`
	// Name and Incarnation are who submitted it.
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	// Op is the kind, "set" or "delete".
	Op string `json:"op"`
	// Key is the memcached key.
	Key string `json:"key"`
	// ValueBytes is the size of the value set.
	ValueBytes int `json:"value_bytes"`
}

// OpsPage is one page of the pending operations, in the order the leader
// applies them: by token, then by position in the batch.
type OpsPage struct {
	// Ops are the page's operations.
	Ops []PendingOp
	// Undecodable are the etcd keys of the pending records among the
	// page's tokens that cannot be decoded; the leader sets them aside.
	Undecodable []string
	// NextToken asks for the next page (PageRequest.Token); empty on the
	// last page.
	NextToken string
}

// valueReadOps bounds the reads of one transaction that fetches the values
// of a page's batches: under etcd's default --max-txn-ops (128), and a
// response of at most that many batches.
const valueReadOps = 64

// OpsPage reads one page of the pending operations in token order.
//
// etcd has no index by revision, so the page's batches are found with a
// keys-only range read sorted by modification revision from the token's
// revision on: etcd answers it from its in-memory key index without
// reading a value, and sends the page's keys only. The values of the
// page's batches are then read by key. The node's and the caller's cost
// thus follow the page; etcd's sort, in memory, follows the pending keys.
func (in *Inspector) OpsPage(ctx context.Context, req PageRequest) (OpsPage, error) {
	if err := req.Validate(); err != nil {
		return OpsPage{}, err
	}
	cur, err := decodeTokenOf(req.Token, kindOps)
	if err != nil {
		return OpsPage{}, err
	}
	size := req.size()
	var page OpsPage
	for {
		room := size - len(page.Ops)
		if room == 0 {
			// Full, and the keys read are all listed: the next page reads
			// on from the next revision.
			page.NextToken = position{kind: kindOps, rev: cur.rev, idx: cur.idx, op: cur.op}.encode()
			return page, nil
		}
		kvs, more, err := in.pendingKeys(ctx, cur.rev, room)
		if err != nil {
			return OpsPage{}, err
		}
		for len(kvs) > 0 {
			rev := kvs[0].ModRevision
			n := 1
			for n < len(kvs) && kvs[n].ModRevision == rev {
				n++
			}
			group, bad, err := in.readBatches(ctx, kvs[:n])
			if err != nil {
				return OpsPage{}, err
			}
			kvs = kvs[n:]
			if rev > cur.rev || (cur.idx == 0 && cur.op == 0) {
				// Entering the revision: its bad records are reported
				// once, by the page that lists its first operation.
				page.Undecodable = append(page.Undecodable, bad...)
			}
			for _, b := range group {
				first := 0
				if rev == cur.rev {
					if b.Index < cur.idx {
						continue
					}
					if b.Index == cur.idx {
						first = cur.op
					}
				}
				for i := first; i < len(b.Ops); i++ {
					if len(page.Ops) == size {
						page.NextToken = position{kind: kindOps, rev: rev, idx: b.Index, op: i}.encode()
						return page, nil
					}
					o := b.Ops[i]
					page.Ops = append(page.Ops, PendingOp{
						Token: tokenseq.Token{Revision: rev, Index: b.Index}, Index: i,
						Name: b.Name, Incarnation: b.Incarnation,
						Op: o.Kind.String(), Key: o.Key, ValueBytes: len(o.Value),
					})
				}
			}
			cur = position{rev: rev + 1}
		}
		if !more {
			return page, nil
		}
	}
}

// pendingKeys returns, keys only, the pending batches from revision from on
// (all of them when from is zero) in revision order: up to limit of them,
// and then only whole revisions (the batches of one transaction share a
// revision and their order is in their values). more reports that batches
// of later revisions follow.
func (in *Inspector) pendingKeys(ctx context.Context, from int64, limit int) ([]*mvccpb.KeyValue, bool, error) {
	opts := []clientv3.OpOption{
		clientv3.WithRange(in.layout.OpsEnd()), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithLimit(int64(limit)),
	}
	if from > 0 {
		opts = append(opts, clientv3.WithMinModRev(from))
	}
	resp, err := in.cli.Get(ctx, in.layout.OpsPrefix(), opts...)
	if err != nil {
		return nil, false, fmt.Errorf("inspect: read pending: %w", err)
	}
	kvs := resp.Kvs
	if !resp.More || len(kvs) == 0 {
		return kvs, false, nil
	}
	last := kvs[len(kvs)-1].ModRevision
	if kvs[0].ModRevision != last {
		// The last revision may go on past the limit: leave it whole to
		// the next read.
		for kvs[len(kvs)-1].ModRevision == last {
			kvs = kvs[:len(kvs)-1]
		}
		return kvs, true, nil
	}
	// One revision fills the limit: read all of it (one transaction's
	// batches, at most etcd's --max-txn-ops).
	resp, err = in.cli.Get(ctx, in.layout.OpsPrefix(),
		clientv3.WithRange(in.layout.OpsEnd()), clientv3.WithKeysOnly(), clientv3.WithRev(resp.Header.Revision),
		clientv3.WithMinModRev(last), clientv3.WithMaxModRev(last))
	if err != nil {
		return nil, false, fmt.Errorf("inspect: read pending: %w", err)
	}
	return resp.Kvs, true, nil
}

// readBatches reads and decodes the batches of keys, which share a
// revision, and returns them by index with the keys of those that cannot
// be decoded. Batches deleted since the keys were read (applied) are left
// out.
func (in *Inspector) readBatches(ctx context.Context, keys []*mvccpb.KeyValue) ([]*ops.Batch, []string, error) {
	var (
		out []*ops.Batch
		bad []string
	)
	for chunk := range slices.Chunk(keys, valueReadOps) {
		gets := make([]clientv3.Op, len(chunk))
		for i, kv := range chunk {
			gets[i] = clientv3.OpGet(string(kv.Key))
		}
		resp, err := in.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return nil, nil, fmt.Errorf("inspect: read pending: %w", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				b, err := ops.DecodeBatch(kv.Value)
				if err != nil {
					bad = append(bad, string(kv.Key))
					continue
				}
				out = append(out, b)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *ops.Batch) int { return cmp.Compare(a.Index, b.Index) })
	return out, bad, nil
}

// MaxCountedBatches bounds the pending batches whose values a count reads:
// a status (CountPending), or a page of the registrations view. Beyond it,
// each batch counts as one operation (a batch holds at least one) and the
// count is a lower bound, so that a count costs the same with any backlog.
const MaxCountedBatches = 1000

// countReadPage is how many pending batches one read takes while counting:
// a batch may be as large as etcd's request limit, so a read holds a few.
const countReadPage = 128

// opCount is the operations of a range of pending batches.
type opCount struct {
	// Batches counts the records of the range, undecodable ones included.
	Batches int
	// Ops counts the operations of the batches read, plus one for each
	// batch not read (LowerBound); an undecodable record read counts none.
	Ops        int
	LowerBound bool
}

// countRecords counts the keys in [start, end) and returns the revision it
// counted at.
func (in *Inspector) countRecords(ctx context.Context, start, end string) (int, int64, error) {
	resp, err := in.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, fmt.Errorf("inspect: count pending: %w", err)
	}
	return int(resp.Count), resp.Header.Revision, nil
}

// sumOps reads the first limit batches in [start, end) at revision rev,
// and returns their operations and how many it read. A keys-only read finds
// where the limit-th batch is, and the values are read up to it,
// countReadPage at a time: etcd walks its key index to each read's end, and
// that end is then near.
func (in *Inspector) sumOps(ctx context.Context, start, end string, rev int64, limit int) (int, int, error) {
	if limit <= 0 {
		return 0, 0, nil
	}
	keys, err := in.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithRev(rev),
		clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return 0, 0, fmt.Errorf("inspect: count pending: %w", err)
	}
	if len(keys.Kvs) == 0 {
		return 0, 0, nil
	}
	end = etcdscan.After(string(keys.Kvs[len(keys.Kvs)-1].Key))
	n, read, from := 0, 0, start
	for {
		resp, err := in.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(countReadPage))
		if err != nil {
			return 0, 0, fmt.Errorf("inspect: count pending: %w", err)
		}
		for _, kv := range resp.Kvs {
			if b, err := ops.DecodeBatch(kv.Value); err == nil {
				n += len(b.Ops)
			}
		}
		read += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return n, read, nil
		}
		from = etcdscan.After(string(resp.Kvs[len(resp.Kvs)-1].Key))
	}
}

// countOps counts the records in [start, end) (count-only) and the
// operations of the first MaxCountedBatches of them, one for each further
// record.
func (in *Inspector) countOps(ctx context.Context, start, end string) (opCount, error) {
	batches, rev, err := in.countRecords(ctx, start, end)
	if err != nil {
		return opCount{}, err
	}
	n, read, err := in.sumOps(ctx, start, end, rev, min(batches, MaxCountedBatches))
	if err != nil {
		return opCount{}, err
	}
	return opCount{Batches: batches, Ops: n + batches - read, LowerBound: read < batches}, nil
}

// PendingCount is the size of the pending queue.
type PendingCount struct {
	// Batches counts the pending records, undecodable ones included.
	Batches int
	// Ops counts the operations of the pending batches: exactly when at
	// most MaxCountedBatches are pending; with more, those of
	// MaxCountedBatches of them and one for each other, and OpsLowerBound
	// is set.
	Ops int
	// OpsLowerBound reports that Ops is a lower bound: the pending
	// operations may be more.
	OpsLowerBound bool
}

// CountPending counts the pending batches (count-only), and their
// operations, reading at most MaxCountedBatches batches.
func (in *Inspector) CountPending(ctx context.Context) (PendingCount, error) {
	c, err := in.countOps(ctx, in.layout.OpsPrefix(), in.layout.OpsEnd())
	if err != nil {
		return PendingCount{}, err
	}
	return PendingCount{Batches: c.Batches, Ops: c.Ops, OpsLowerBound: c.LowerBound}, nil
}
