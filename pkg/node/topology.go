package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// localTopology is the topology of the node's flags: Memcached (each
// "host:port" or "host:port=weight") spread by Distribution.
func (c *Config) localTopology() (topology.Topology, error) {
	t := topology.Topology{Distribution: c.Distribution}
	for _, a := range c.Memcached {
		s, err := hashring.ParseServer(a)
		if err != nil {
			return topology.Topology{}, config.Errorf("node", "Memcached", "%w", err)
		}
		t.Servers = append(t.Servers, s)
	}
	if err := t.Validate(); err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			field := map[string]string{"Distribution": "Distribution", "Servers": "Memcached"}[fe.Field]
			return topology.Topology{}, config.Errorf("node", field, "%s", fe.Rule)
		}
		return topology.Topology{}, err
	}
	return t, nil
}

// ensureTopology checks the node's topology against the namespace's in
// etcd, writing it on a namespace without one, and retries etcd's failures
// until ctx ends. A mismatch is logged and returned: the node must not
// lead with servers the other nodes do not share.
func ensureTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local topology.Topology, log *slog.Logger) (topology.Topology, error) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		stored, err := topology.Ensure(ctx, cli, l, local)
		switch {
		case err == nil:
			log.Info("memcached topology", "topology", stored.String())
			return stored, nil
		case errors.Is(err, topology.ErrMismatch), errors.Is(err, topology.ErrCorrupt), errors.Is(err, config.ErrBadConfig):
			log.Error("refusing to lead: memcached topology", "err", err)
			return topology.Topology{}, err
		case ctx.Err() != nil:
			return topology.Topology{}, ctx.Err()
		}
		log.Warn("reading the memcached topology; retrying", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return topology.Topology{}, ctx.Err()
		}
	}
}

// checkTopology reads etcd's topology again when the node wins, since it
// may have changed since the node started; a node whose servers no longer
// match must not write. It returns the revision it read at.
func checkTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local topology.Topology) (int64, error) {
	stored, rev, err := topology.Read(ctx, cli, l)
	if err != nil {
		return 0, fmt.Errorf("node: check the memcached topology: %w", err)
	}
	if reason := local.Diff(stored); reason != "" {
		return 0, &topology.MismatchError{Local: local, Stored: stored, Reason: reason}
	}
	return rev, nil
}

// watchTopology watches etcd's topology from revision rev+1 until ctx ends
// and calls mismatch once it no longer matches local (a topology set while
// the node leads), so that the leader stops writing to servers the
// namespace no longer has. It returns a func that waits for it to stop.
func watchTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local topology.Topology, rev int64, log *slog.Logger, mismatch func(error)) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
		for ctx.Err() == nil {
			for resp := range cli.Watch(clientv3.WithRequireLeader(ctx), l.Topology(), clientv3.WithRev(rev+1)) {
				if err := resp.Err(); err != nil {
					log.Debug("watching the memcached topology", "err", err)
					break
				}
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision
					if ev.Type != clientv3.EventTypePut {
						log.Warn("the memcached topology was deleted from etcd; keeping this node's")
						continue
					}
					stored, err := topology.Decode(ev.Kv.Value)
					if err != nil {
						log.Error("the memcached topology in etcd does not decode; keeping this node's", "err", err)
						continue
					}
					if reason := local.Diff(stored); reason != "" {
						mismatch(&topology.MismatchError{Local: local, Stored: stored, Reason: reason})
						return
					}
				}
			}
			// The watch ended (compaction, etcd restarting): read again,
			// and watch from there.
			if !retry.Sleep(ctx, backoff.Next()) {
				return
			}
			r, err := checkTopology(ctx, cli, l, local)
			if errors.Is(err, topology.ErrMismatch) {
				mismatch(err)
				return
			}
			if err == nil {
				rev = r
			}
		}
	})
	return wg.Wait
}
