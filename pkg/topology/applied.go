package topology

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Applied is the topology the leaders write with, and the change to
// another one under way, as keyspace.Layout.TopologyApplied() holds it:
//
//	{"applied":{"distribution":"ketama","servers":[…],"epoch":2},"to":{…,"epoch":3},"cleaned":true}
//	{"applied":{…,"epoch":3},"last_change":{"from_epoch":2,"to_epoch":3,"moved":51,"unmoved_count":0,…}}
//
// A namespace without it writes with its topology (see Topology). A leader
// moves the keys from Applied to To (see Migrate) before it writes with To,
// and a leader that finds To set finishes that change first.
type Applied struct {
	// Applied is the topology every key was written with.
	Applied Topology `json:"applied"`
	// To is the topology keys are being moved to; nil when none.
	To *Topology `json:"to,omitempty"`
	// Cleaned is true once the change to To has removed the copies To's
	// servers held from earlier topologies (see Migrate).
	Cleaned bool `json:"cleaned,omitempty"`
	// LastChange is what the change that made Applied the applied
	// topology did, the keys it could not move among it; nil when no
	// change did.
	LastChange *MigrateResult `json:"last_change,omitempty"`
}

// ReadApplied reads the applied topology; found is false on a namespace
// without one (whose keys are written with its topology).
func ReadApplied(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (_ Applied, found bool, _ error) {
	key := l.TopologyApplied()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return Applied{}, false, fmt.Errorf("topology: read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return Applied{}, false, nil
	}
	var a Applied
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		return Applied{}, false, fmt.Errorf("%w: %s: %w", ErrCorrupt, key, err)
	}
	return a, true, nil
}

// writeApplied writes a, in a transaction that succeeds only while guard
// holds; election.ErrNotLeader otherwise.
func writeApplied(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, guard clientv3.Cmp, a Applied) error {
	a.Applied = a.Applied.normal()
	if a.To != nil {
		to := a.To.normal()
		a.To = &to
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	resp, err := cli.Txn(ctx).If(guard).Then(clientv3.OpPut(l.TopologyApplied(), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("topology: write %s: %w", l.TopologyApplied(), err)
	}
	if !resp.Succeeded {
		return election.ErrNotLeader
	}
	return nil
}

// RecordApplied records t as the applied topology, with no change under
// way, in a transaction that succeeds only while guard holds (the
// leadership's Guard); election.ErrNotLeader otherwise.
func RecordApplied(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, guard clientv3.Cmp, t Topology) error {
	return writeApplied(ctx, cli, l, guard, Applied{Applied: t})
}
