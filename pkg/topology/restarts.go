package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// The record of restarts.
//
// A leader that finds one of the namespace's memcached servers restarted
// (see memfence.Writer.CheckRestarts) records it under
// keyspace.Layout.MemcachedRestarts(), so that inspection shows it after the
// leader's log has scrolled away and whichever node leads:
//
//	{"count":2,"last":[{"server":"10.0.0.2:11211","old_pid":1234,"new_pid":1301,"time":"2026-12-03T13:40:00Z","term":3}, …]}
//
// The value stays small: count grows, last keeps the MaxRecordedRestarts
// latest restarts, oldest first.

// MaxRecordedRestarts bounds RestartLog.Last.
const MaxRecordedRestarts = 16

// RestartEvent is one restart of a memcached server as a leader saw it.
type RestartEvent struct {
	// Server is the server's address.
	Server string `json:"server"`
	// OldPid and NewPid are memcached's process ids before and after.
	OldPid int `json:"old_pid"`
	NewPid int `json:"new_pid"`
	// Time is when the leader noticed it.
	Time time.Time `json:"time"`
	// Term is the term of the leader that noticed it.
	Term uint64 `json:"term"`
}

// RestartLog is the namespace's record of restarts.
type RestartLog struct {
	// Count is every restart recorded in the namespace.
	Count int64 `json:"count"`
	// Last are the latest MaxRecordedRestarts restarts, oldest first.
	Last []RestartEvent `json:"last"`
}

// Latest is the latest restart recorded, the zero RestartEvent when none is.
func (r RestartLog) Latest() RestartEvent {
	if len(r.Last) == 0 {
		return RestartEvent{}
	}
	return r.Last[len(r.Last)-1]
}

// ReadRestarts reads the namespace's record of restarts; a namespace
// without one has the zero RestartLog. A value that does not decode is
// ErrCorrupt.
func ReadRestarts(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (RestartLog, error) {
	log, _, err := readRestarts(ctx, cli, l)
	return log, err
}

// readRestarts returns the record and the mod revision it was read at (0
// when absent).
func readRestarts(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (RestartLog, int64, error) {
	resp, err := cli.Get(ctx, l.MemcachedRestarts())
	if err != nil {
		return RestartLog{}, 0, fmt.Errorf("topology: read %s: %w", l.MemcachedRestarts(), err)
	}
	if len(resp.Kvs) == 0 {
		return RestartLog{}, 0, nil
	}
	var log RestartLog
	if err := json.Unmarshal(resp.Kvs[0].Value, &log); err != nil {
		return RestartLog{}, resp.Kvs[0].ModRevision, fmt.Errorf("%w: %s: %w", ErrCorrupt, l.MemcachedRestarts(), err)
	}
	return log, resp.Kvs[0].ModRevision, nil
}

// RecordRestarts adds events to the namespace's record of restarts, in a
// transaction that succeeds only while guard holds (the leadership's
// Guard) and the record is as read; a concurrent change makes it read
// again. It returns election.ErrNotLeader when guard fails. A record that
// does not decode is replaced, keeping nothing of it.
func RecordRestarts(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, guard clientv3.Cmp, events []RestartEvent) error {
	if len(events) == 0 {
		return nil
	}
	key := l.MemcachedRestarts()
	for {
		log, rev, err := readRestarts(ctx, cli, l)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
		log.Count += int64(len(events))
		log.Last = append(log.Last, events...)
		if n := len(log.Last) - MaxRecordedRestarts; n > 0 {
			log.Last = append([]RestartEvent(nil), log.Last[n:]...)
		}
		b, _ := json.Marshal(log)
		resp, err := cli.Txn(ctx).If(guard, clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).
			Else(clientv3.OpTxn([]clientv3.Cmp{guard}, nil, nil)).Commit()
		if err != nil {
			return fmt.Errorf("topology: record restarts in %s: %w", key, err)
		}
		if resp.Succeeded {
			return nil
		}
		if !resp.Responses[0].GetResponseTxn().Succeeded {
			return election.ErrNotLeader
		}
	}
}
