// Package inspect reads the coordinator's state from etcd for people and
// tools: leader and term, the applied watermark, pending operations, the
// registrations with their drain status (G7's view), and the memcached
// restarts the leaders recorded. It only reads.
package inspect

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// pageSize bounds one read of the pending batches.
const pageSize = 1000

// Status summarises a namespace.
type Status struct {
	// Namespace is the namespace read.
	Namespace string `json:"namespace"`
	// Leader is the id of the leading node, "" when none leads.
	Leader string `json:"leader"`
	// Term is the current leader term.
	Term uint64 `json:"term"`
	// Applied is the watermark: every batch up to it has been applied.
	Applied tokenseq.Token `json:"applied"`
	// PendingBatches and PendingOps count what waits to be applied.
	PendingBatches int `json:"pending_batches"`
	PendingOps     int `json:"pending_ops"`
	// Registrations counts the current registrations.
	Registrations int `json:"registrations"`
	// Quarantined counts the records set aside as unreadable or refused.
	Quarantined int64 `json:"quarantined"`
	// MemcachedRestarts counts the memcached restarts the leaders recorded
	// (see topology.RecordRestarts).
	MemcachedRestarts int64 `json:"memcached_restarts"`
	// LastRestart is the latest of them; the zero RestartEvent when there
	// is none.
	LastRestart topology.RestartEvent `json:"last_restart,omitzero"`
}

// Inspector reads one namespace.
type Inspector struct {
	cli       *clientv3.Client
	layout    keyspace.Layout
	namespace string
}

// New returns an Inspector for namespace ns.
func New(cli *clientv3.Client, ns string) (*Inspector, error) {
	layout, err := keyspace.New(ns)
	if err != nil {
		return nil, err
	}
	return &Inspector{cli: cli, layout: layout, namespace: ns}, nil
}

// Status reads the summary.
func (in *Inspector) Status(ctx context.Context) (Status, error) {
	st := Status{Namespace: in.namespace}
	es, err := election.Observe(ctx, in.cli, in.layout)
	if err != nil {
		return st, err
	}
	st.Leader, st.Term = es.Leader, es.Term
	if st.Applied, _, err = tokenseq.Watermark(ctx, in.cli, in.layout); err != nil {
		return st, err
	}
	pending, err := in.Pending(ctx)
	if err != nil {
		return st, err
	}
	st.PendingBatches = len(pending.Batches)
	for _, b := range pending.Batches {
		st.PendingOps += len(b.Ops)
	}
	regs, err := in.cli.Get(ctx, in.layout.RegPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return st, fmt.Errorf("inspect: count registrations: %w", err)
	}
	st.Registrations = int(regs.Count)
	q, err := in.cli.Get(ctx, in.layout.QuarantinePrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return st, fmt.Errorf("inspect: count quarantine: %w", err)
	}
	st.Quarantined = q.Count
	restarts, err := topology.ReadRestarts(ctx, in.cli, in.layout)
	if err != nil {
		return st, fmt.Errorf("inspect: %w", err)
	}
	st.MemcachedRestarts, st.LastRestart = restarts.Count, restarts.Latest()
	return st, nil
}

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

// PendingBatch is one batch waiting to be applied.
type PendingBatch struct {
	// Token is the batch's token.
	Token tokenseq.Token
	// Name and Incarnation are who submitted it.
	Name        string
	Incarnation int64
	// Ops are its operations, in order.
	Ops []ops.Op
}

// Pending is every pending batch in token order, with the keys of records
// that cannot be decoded.
type Pending struct {
	// Batches are the pending batches, in token order.
	Batches []PendingBatch
	// Bad are the keys of records that cannot be decoded.
	Bad []string
}

// Pending reads every pending batch, page by page, and sorts them by token.
func (in *Inspector) Pending(ctx context.Context) (Pending, error) {
	var out Pending
	_, err := etcdscan.Prefix(ctx, in.cli, in.layout.OpsPrefix(), pageSize, func(page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			b, err := ops.DecodeBatch(kv.Value)
			if err != nil {
				out.Bad = append(out.Bad, string(kv.Key))
				continue
			}
			out.Batches = append(out.Batches, PendingBatch{
				Token: tokenseq.Token{Revision: kv.ModRevision, Index: b.Index},
				Name:  b.Name, Incarnation: b.Incarnation, Ops: b.Ops,
			})
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("inspect: read pending: %w", err)
	}
	sort.Slice(out.Batches, func(i, j int) bool { return out.Batches[i].Token.Less(out.Batches[j].Token) })
	return out, nil
}

// Registration statuses.
const (
	StatusActive   = "active"
	StatusDraining = "draining"
)

// RegistrationView is one incarnation as inspection shows it: every current
// registration, and every earlier incarnation that still has unapplied
// operations (status draining). An incarnation that is not current and has
// nothing pending is not listed.
type RegistrationView struct {
	Name        string          `json:"name"`
	Incarnation int64           `json:"incarnation"`
	Status      string          `json:"status"`
	Pending     int             `json:"pending"`
	Holder      registry.Holder `json:"holder"`
	// TTLLeft is the lease time left; zero for draining incarnations.
	TTLLeft time.Duration `json:"ttl_left_ns"`
}

// Registrations lists the registrations view sorted by name, then
// incarnation.
func (in *Inspector) Registrations(ctx context.Context) ([]RegistrationView, error) {
	regs, _, err := registry.New(in.cli, in.layout).List(ctx)
	if err != nil {
		return nil, err
	}
	p, err := in.Pending(ctx)
	if err != nil {
		return nil, err
	}
	type incKey struct {
		name string
		inc  int64
	}
	pending := map[incKey]int{}
	for _, b := range p.Batches {
		pending[incKey{b.Name, b.Incarnation}] += len(b.Ops)
	}
	var out []RegistrationView
	for _, r := range regs {
		v := RegistrationView{Name: r.Name, Incarnation: r.Incarnation, Status: StatusActive, Holder: r.Holder}
		k := incKey{r.Name, r.Incarnation}
		v.Pending = pending[k]
		delete(pending, k)
		if r.LeaseID != 0 {
			if ttl, err := in.cli.TimeToLive(ctx, r.LeaseID); err == nil && ttl.TTL > 0 {
				v.TTLLeft = time.Duration(ttl.TTL) * time.Second
			}
		}
		out = append(out, v)
	}
	for k, n := range pending {
		out = append(out, RegistrationView{Name: k.name, Incarnation: k.inc, Status: StatusDraining, Pending: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Incarnation < out[j].Incarnation
	})
	return out, nil
}

// Quarantined lists the records set aside by the leader.
func (in *Inspector) Quarantined(ctx context.Context) ([]applier.QuarantineRecord, error) {
	resp, err := in.cli.Get(ctx, in.layout.QuarantinePrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("inspect: read quarantine: %w", err)
	}
	var out []applier.QuarantineRecord
	for _, kv := range resp.Kvs {
		var q applier.QuarantineRecord
		if err := json.Unmarshal(kv.Value, &q); err != nil {
			q = applier.QuarantineRecord{Key: string(kv.Key), Reason: "unreadable quarantine record"}
		}
		out = append(out, q)
	}
	return out, nil
}
