// Package election elects the one coordinator node that writes to memcached.
//
// Nodes campaign as etcd's concurrency election does (on the same keys, so
// concurrency.Election observes them), but wait for their predecessors
// with watches etcd serves at once (see campaign). The winner bumps the
// term counter in a transaction guarded by its own leader key, so terms grow
// with every new leader and only a real leader can take one. A Leadership
// carries a context that is cancelled the moment leadership is lost: the
// session's lease is gone, the leader key was deleted, or the lease deadline
// measured on this node's own clock has passed without a renewal.
//
// The local deadline is conservative: it is the send time of the last
// successful keep-alive plus the TTL etcd granted, which is never later than
// the moment etcd itself expires the lease. A node that is not paused
// therefore stops writing before any other node can be elected. A paused
// node cannot check anything; the fencing in package memfence covers it.
//
// Pitfalls of the raw etcd API handled here: Campaign is cancelled when the
// session dies (it would otherwise block forever, or return nil after the
// lease expired); leadership is re-checked by transaction after Campaign
// returns; Resign and lease revocation on shutdown use a fresh context so a
// graceful stop hands leadership over at once, not after a lease wait.
package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/coordinator-dev/coordinator/internal/etcderr"
	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// DefaultLeaseTTL is the election lease TTL when Config.LeaseTTL is zero.
const DefaultLeaseTTL = 5 * time.Second

// Errors of the election.
var (
	// ErrNotLeader is returned when an operation needs leadership that this
	// node does not hold.
	ErrNotLeader = errors.New("election: not leader")
	// ErrLeadershipLost is the cause of a Leadership context's cancellation.
	ErrLeadershipLost = errors.New("election: leadership lost")
)

// Config configures a campaigning node. Zero values mean the defaults
// noted.
type Config struct {
	// Etcd is the etcd client.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// NodeID names this node in the election and in status output.
	NodeID string
	// LeaseTTL is the session lease TTL, whole seconds and at least 2s;
	// zero means DefaultLeaseTTL. A dead leader is replaced within about
	// this long.
	LeaseTTL time.Duration
	// Logger receives state changes; nil means slog.Default().
	Logger *slog.Logger
	// Observer, when set, is kept up to date with the node's campaign
	// state, term and lease (metrics, health checks).
	Observer *Observer
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("election", "Etcd", "is nil")
	case c.Layout.Prefix() == "":
		return config.Errorf("election", "Layout", "is empty")
	case c.LeaseTTL != 0 && c.LeaseTTL < 2*time.Second:
		return config.Errorf("election", "LeaseTTL", "%s is under 2s", c.LeaseTTL)
	case c.LeaseTTL%time.Second != 0:
		return config.Errorf("election", "LeaseTTL", "%s is not whole seconds", c.LeaseTTL)
	}
	if err := keyspace.ValidateName(c.NodeID); err != nil {
		return config.Errorf("election", "NodeID", "%w", err)
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (c Config) withDefaults() Config {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// LeaderInfo is what the leader publishes under its election key.
type LeaderInfo struct {
	NodeID string `json:"node_id"`
}

// Leadership is one term of leadership held by this node.
type Leadership struct {
	// Term grows with every new leader of the namespace.
	Term uint64
	// NodeID is this node.
	NodeID string
	// Key and Rev are the leader key and its create revision.
	Key string
	Rev int64

	ctx      context.Context
	deadline *atomic.Int64 // unix nanoseconds
}

// Context is cancelled, with cause ErrLeadershipLost, when leadership ends.
func (l *Leadership) Context() context.Context { return l.ctx }

// Valid reports whether this node may still act as leader: its context is
// live and the local lease deadline has not passed. Check it right before
// every external write.
func (l *Leadership) Valid() bool {
	return l.ctx.Err() == nil && time.Now().UnixNano() < l.deadline.Load()
}

// Guard is the comparison that makes an etcd transaction succeed only while
// this leadership holds.
func (l *Leadership) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.Key), "=", l.Rev)
}

// Run campaigns until ctx ends. Each time this node wins, lead runs with the
// new Leadership; when lead returns or leadership is lost, the node resigns
// and campaigns again. When ctx ends, Run resigns at once (a follower takes
// over without waiting for a lease to expire) and returns nil.
func Run(ctx context.Context, cfg Config, lead func(*Leadership) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for ctx.Err() == nil {
		err := runOnce(ctx, cfg, lead)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			cfg.Logger.Warn("election round ended", "node", cfg.NodeID, "err", err)
			if !retry.Sleep(ctx, backoff.Next()) {
				break
			}
			continue
		}
		backoff.Reset()
	}
	return nil
}

// runOnce holds one session: campaign, lead, resign.
func runOnce(ctx context.Context, cfg Config, lead func(*Leadership) error) error {
	cli := cfg.Etcd
	ttlSec := int64(cfg.LeaseTTL / time.Second)
	sent := time.Now()
	grant, err := cli.Grant(ctx, ttlSec)
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	obs := cfg.Observer
	kept := &keptLease{cli: cli, id: grant.ID, ttl: cfg.LeaseTTL, obs: obs}
	kept.deadline.Store(sent.Add(time.Duration(grant.TTL) * time.Second).UnixNano())
	obs.renewed(sent, kept.deadline.Load())
	defer obs.sessionEnded()

	sessCtx, cancelSess := context.WithCancelCause(ctx)
	defer cancelSess(nil)
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(grant.ID), concurrency.WithContext(sessCtx))
	if err != nil {
		revokeLease(cli, grant.ID)
		return fmt.Errorf("session: %w", err)
	}
	defer revokeLease(cli, grant.ID)
	obs.setState(StateCampaigning)

	// Keep our own deadline: renew every TTL/3 and record the send time.
	go kept.keep(sessCtx, cancelSess)
	go func() {
		select {
		case <-sess.Done():
			cancelSess(fmt.Errorf("%w: session lease ended", ErrLeadershipLost))
		case <-sessCtx.Done():
		}
	}()

	info, _ := json.Marshal(LeaderInfo{NodeID: cfg.NodeID})
	el, err := campaign(sessCtx, sess, cfg.Layout.Election(), string(info))
	if err != nil {
		if cause := context.Cause(sessCtx); cause != nil && ctx.Err() == nil {
			return cause
		}
		return fmt.Errorf("campaign: %w", err)
	}
	defer resign(el)

	key, rev := el.Key(), el.Rev()
	term, termRev, err := takeTerm(sessCtx, cfg, key, rev)
	if err != nil {
		return err
	}

	leadCtx, cancelLead := context.WithCancelCause(sessCtx)
	defer cancelLead(nil)
	go watchLeaderKey(leadCtx, cancelLead, cli, key, termRev)

	l := &Leadership{Term: term, NodeID: cfg.NodeID, Key: key, Rev: rev, ctx: leadCtx, deadline: &kept.deadline}
	cfg.Logger.Info("became leader", "node", cfg.NodeID, "term", term)
	obs.lead(term)
	err = lead(l)
	obs.setState(StateCampaigning) // until the session ends, below
	cause := context.Cause(leadCtx)
	cfg.Logger.Info("leadership ended", "node", cfg.NodeID, "term", term, "err", err, "cause", cause)
	if ctx.Err() == nil && err == nil && cause != nil {
		err = cause
	}
	return err
}

// takeTerm takes the next term for the leader key key (created at revision
// rev) and returns it with the revision it was taken at. Campaign can return
// after the session expired: the transaction confirms the leader key is
// still ours.
func takeTerm(ctx context.Context, cfg Config, key string, rev int64) (uint64, int64, error) {
	termKey := cfg.Layout.Term()
	resp, err := cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpPut(termKey, cfg.NodeID), clientv3.OpGet(termKey)).
		Commit()
	if err != nil {
		return 0, 0, fmt.Errorf("take term: %w", err)
	}
	if !resp.Succeeded {
		return 0, 0, fmt.Errorf("take term: %w", ErrNotLeader)
	}
	return uint64(resp.Responses[1].GetResponseRange().Kvs[0].Version), resp.Header.Revision, nil
}

// keptLease is a session's lease and the local deadline until which it is
// known to hold.
type keptLease struct {
	cli      *clientv3.Client
	id       clientv3.LeaseID
	ttl      time.Duration
	deadline atomic.Int64 // unix nanoseconds
	obs      *Observer    // may be nil
}

// keep renews the lease every ttl/3 and moves the local deadline to send
// time + granted TTL after each success. It cancels the session when the
// lease is gone or the deadline passes.
func (k *keptLease) keep(ctx context.Context, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(k.ttl / 3)
	defer tick.Stop()
	for {
		left := time.Until(time.Unix(0, k.deadline.Load()))
		if left <= 0 {
			cancel(fmt.Errorf("%w: lease deadline passed without renewal", ErrLeadershipLost))
			return
		}
		expire := time.NewTimer(left)
		select {
		case <-ctx.Done():
			expire.Stop()
			return
		case <-expire.C:
			continue
		case <-tick.C:
			expire.Stop()
		}
		sent := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, k.ttl/3)
		resp, err := k.cli.KeepAliveOnce(rctx, k.id)
		rcancel()
		if err != nil {
			if etcderr.IsLeaseNotFound(err) {
				cancel(fmt.Errorf("%w: lease not found", ErrLeadershipLost))
				return
			}
			continue // transient: the deadline decides
		}
		k.deadline.Store(sent.Add(time.Duration(resp.TTL) * time.Second).UnixNano())
		k.obs.renewed(sent, k.deadline.Load())
	}
}

// watchLeaderKey cancels leadership when the leader key is deleted.
func watchLeaderKey(ctx context.Context, cancel context.CancelCauseFunc, cli *clientv3.Client, key string, rev int64) {
	for ctx.Err() == nil {
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(rev+1))
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					cancel(fmt.Errorf("%w: leader key deleted", ErrLeadershipLost))
					return
				}
			}
			if wr.Header.Revision > rev {
				rev = wr.Header.Revision
			}
		}
		// The watch broke (no etcd leader, member lost); if the key is gone,
		// leadership is; otherwise the lease deadline guards meanwhile.
		gctx, gcancel := context.WithTimeout(ctx, time.Second)
		resp, err := cli.Get(gctx, key)
		gcancel()
		if err == nil {
			if len(resp.Kvs) == 0 {
				cancel(fmt.Errorf("%w: leader key deleted", ErrLeadershipLost))
				return
			}
			rev = resp.Header.Revision
		} else if !retry.Sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

func resign(el *concurrency.Election) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = el.Resign(ctx)
}

func revokeLease(cli *clientv3.Client, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = cli.Revoke(ctx, id)
}

// Status is the namespace's leadership as seen in etcd.
type Status struct {
	// Leader is the current leader's node ID, empty when there is none.
	Leader string
	// Term is the latest term taken.
	Term uint64
	// TermHolder is the node that took Term.
	TermHolder string
}

// Observe reads the current leader and term.
func Observe(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout) (Status, error) {
	first := []clientv3.OpOption{
		clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1),
	}
	resp, err := cli.Txn(ctx).Then(clientv3.OpGet(layout.Election()+"/", first...), clientv3.OpGet(layout.Term())).Commit()
	if err != nil {
		return Status{}, fmt.Errorf("election: observe: %w", err)
	}
	var st Status
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var info LeaderInfo
		if json.Unmarshal(kvs[0].Value, &info) == nil {
			st.Leader = info.NodeID
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		st.Term = uint64(kvs[0].Version)
		st.TermHolder = string(kvs[0].Value)
	}
	return st, nil
}
