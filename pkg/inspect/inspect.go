// Package inspect reads the coordinator's state from etcd for people and
// tools: leader and term, the applied watermark, pending operations, the
// registrations with their drain status (G7's view), and the memcached
// restarts the leaders recorded. It only reads.
//
// What it reads costs the same whatever the size of the namespace: counts
// are etcd's (count-only reads) or bounded (MaxCountedBatches), and the
// listings, the registrations view and the pending operations, are read a
// page at a time (PageRequest), each page's cost following its own rows.
package inspect

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

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
	// PendingBatches and PendingOps count what waits to be applied (see
	// CountPending): the pending records, and their operations.
	PendingBatches int `json:"pending_batches"`
	PendingOps     int `json:"pending_ops"`
	// PendingOpsLowerBound reports that PendingOps is a lower bound: more
	// than MaxCountedBatches batches are pending (see CountPending).
	PendingOpsLowerBound bool `json:"pending_ops_lower_bound,omitempty"`
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

// Status reads the summary. Its cost is the same with any number of
// registrations and any backlog: everything but the pending operations is
// counted by etcd (count-only reads), and those are counted by reading at
// most MaxCountedBatches batches (see CountPending).
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
	pending, err := in.CountPending(ctx)
	if err != nil {
		return st, err
	}
	st.PendingBatches, st.PendingOps, st.PendingOpsLowerBound = pending.Batches, pending.Ops, pending.OpsLowerBound
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
