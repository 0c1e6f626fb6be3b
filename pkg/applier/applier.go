// Package applier is the leader's write path: it reads pending batches in
// token order and applies them to memcached, then records the new applied
// watermark and removes the applied batches in one etcd transaction guarded
// by the leadership.
//
// Order (G2): batches are applied one after the other in token order, the
// operations of a batch in the order given. Within a run of batches applied
// together only the last operation on each key is written: the skipped ones
// would have been overwritten at once, and every write that is made happens
// in token order, so no reader can tell the difference.
//
// Replay (G3, G6): after taking over, the leader cannot know which pending
// batches its predecessor already wrote. It reads every pending batch up to
// the revision at which it took over (the replay window) and, for each key,
// writes only the newest operation of that window. Whatever the predecessor
// wrote is older than or equal to that, so a key never goes back. Writes are
// idempotent, so replaying what was already written is harmless (exactly
// once in effect).
//
// memcached being down leaves batches pending: the write is retried with
// backoff, re-checking leadership before every attempt, and nothing is
// dropped. A record that cannot be decoded, or an operation memcached refuses
// for good, is set aside under the quarantine prefix and reported instead of
// stalling the leader.
package applier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// DefaultMaxBatchesPerCommit keeps a commit transaction (one watermark put,
// a delete per batch, a quarantine put per bad batch) within etcd's default
// --max-txn-ops of 128.
const DefaultMaxBatchesPerCommit = 63

// DefaultMaxInboxBatches bounds the batches the live path holds in memory.
const DefaultMaxInboxBatches = 4096

// Config configures the applier.
type Config struct {
	Client    *clientv3.Client
	Layout    keyspace.Layout
	Memcached *memfence.Writer
	// Limits are used to validate records, which may have been written by
	// something other than this coordinator.
	Limits ops.Limits
	// MaxBatchesPerCommit bounds the batches applied and removed together;
	// zero means DefaultMaxBatchesPerCommit.
	MaxBatchesPerCommit int
	// MaxInboxBatches bounds the batches received from the watch and not yet
	// applied (while memcached is down, say); the watch is not read further
	// until the applier catches up. Zero means DefaultMaxInboxBatches.
	MaxInboxBatches int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Stats, when set, is updated as the applier works.
	Stats *Stats
	// Hooks observe writes; for tests and tracing.
	Hooks Hooks
}

// Hooks are called on the applying goroutine.
type Hooks struct {
	// BeforeWrite runs after the leadership check, right before an
	// operation is written to memcached.
	BeforeWrite func(ctx context.Context, w Write)
	// AfterWrite runs after an operation was written to memcached.
	AfterWrite func(w Write)
}

// Write is one operation as the applier writes it.
type Write struct {
	// Token is the batch's token.
	Token tokenseq.Token
	// Index is the operation's position in its batch.
	Index       int
	Name        string
	Incarnation int64
	Op          ops.Op
	Term        uint32
}

// Stats counts the applier's work. Fields are updated atomically.
type Stats struct {
	Applied     atomic.Uint64 // operations written to memcached
	Skipped     atomic.Uint64 // operations overwritten by a newer one before being written
	Batches     atomic.Uint64 // batches removed as applied or set aside
	Quarantined atomic.Uint64 // records or operations set aside
	Retries     atomic.Uint64 // memcached write attempts that failed transiently
	Commits     atomic.Uint64 // watermark transactions
}

// Errors of the applier.
var (
	// ErrNotLeader means leadership was lost while applying; the caller
	// should stop and campaign again.
	ErrNotLeader = election.ErrNotLeader
)

// QuarantineRecord is what is stored under the quarantine prefix. It keeps
// an excerpt of the record, not all of it, so that setting aside a large
// record cannot push the commit transaction over etcd's request size limit.
type QuarantineRecord struct {
	Key        string `json:"key"`
	Token      int64  `json:"token"`
	Reason     string `json:"reason"`
	ValueBytes int    `json:"value_bytes"`
	// Excerpt is the first QuarantineExcerptBytes of the record.
	Excerpt []byte `json:"excerpt"`
}

// QuarantineExcerptBytes bounds the excerpt kept of a record set aside.
const QuarantineExcerptBytes = 1024

func quarantineRecord(it pending, reason string) QuarantineRecord {
	ex := it.value
	if len(ex) > QuarantineExcerptBytes {
		ex = ex[:QuarantineExcerptBytes]
	}
	return QuarantineRecord{Key: it.key, Token: it.rev, Reason: reason, ValueBytes: len(it.value), Excerpt: ex}
}

type applier struct {
	cfg   Config
	lead  *election.Leadership
	term  uint32
	log   *slog.Logger
	stats *Stats
	wm    tokenseq.Token
}

// pending is one batch record read from etcd.
type pending struct {
	key   string
	rev   int64
	value []byte
	batch *ops.Batch // nil when bad
	bad   string
}

type opPos struct {
	rev int64
	idx int
}

// Run applies pending batches until ctx ends or leadership is lost. It
// returns ErrNotLeader or memfence.ErrFenced when this node must stop acting
// as leader, and other errors (a broken watch) after which it may be run
// again.
func Run(ctx context.Context, cfg Config, lead *election.Leadership) error {
	if cfg.MaxBatchesPerCommit <= 0 {
		cfg.MaxBatchesPerCommit = DefaultMaxBatchesPerCommit
	}
	if cfg.MaxInboxBatches <= 0 {
		cfg.MaxInboxBatches = DefaultMaxInboxBatches
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	if lead.Term > 0xffffffff {
		return fmt.Errorf("applier: term %d does not fit memcached's flags", lead.Term)
	}
	a := &applier{cfg: cfg, lead: lead, term: uint32(lead.Term), log: cfg.Logger, stats: cfg.Stats}
	wm, _, err := tokenseq.Watermark(ctx, cfg.Client, cfg.Layout)
	if err != nil {
		return err
	}
	a.wm = wm
	r0, err := a.replay(ctx)
	if err != nil {
		return err
	}
	return a.follow(ctx, r0)
}

// replay applies every batch pending at the current revision, writing only
// the newest operation per key of the whole window. It returns the revision
// the window was read at.
func (a *applier) replay(ctx context.Context) (int64, error) {
	resp, err := a.cfg.Client.Get(ctx, a.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("applier: read pending: %w", err)
	}
	items := make([]pending, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		items = append(items, a.decode(string(kv.Key), kv.ModRevision, kv.Value))
	}
	if len(items) > 0 {
		a.log.Info("replaying pending batches", "batches", len(items), "watermark", a.wm.String(), "term", a.term)
	}
	// Every write of the window is made before the first commit: an
	// operation skipped because a newer one on its key comes later in the
	// window is applied only once that newer one is written, so the
	// watermark may not pass it before then.
	if err := a.apply(ctx, items, newestPerKey(items)); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// follow watches for new batches after rev and applies them as they come.
// A pump goroutine receives the watch into an inbox while the applier is
// busy writing and committing, so each round takes everything that arrived
// meanwhile (up to one commit's worth): under load, commits are shared by
// many batches instead of one each.
func (a *applier) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := a.cfg.Client.Watch(wctx, a.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	in := newInbox(a.cfg.MaxInboxBatches)
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		a.pump(wctx, wch, in)
	}()
	defer func() {
		cancel()
		in.close()
		<-pumped
	}()
	for {
		chunk, err := in.take(ctx, a.cfg.MaxBatchesPerCommit)
		if err != nil {
			return err
		}
		if err := a.apply(ctx, chunk, newestPerKey(chunk)); err != nil {
			return err
		}
	}
}

// pump moves watch responses into the inbox until the watch ends.
func (a *applier) pump(ctx context.Context, wch clientv3.WatchChan, in *inbox) {
	for wr := range wch {
		if err := wr.Err(); err != nil {
			in.fail(fmt.Errorf("applier: watch: %w", err))
			return
		}
		if !in.put(ctx, a.appendEvents(nil, wr.Events)) {
			return
		}
	}
	if ctx.Err() != nil {
		in.fail(ctx.Err())
		return
	}
	in.fail(errors.New("applier: watch closed"))
}

func (a *applier) appendEvents(queue []pending, evs []*clientv3.Event) []pending {
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut {
			continue
		}
		queue = append(queue, a.decode(string(ev.Kv.Key), ev.Kv.ModRevision, ev.Kv.Value))
	}
	return queue
}

// decode turns a stored record into a pending batch, marking it bad when it
// cannot be decoded or does not match its key.
func (a *applier) decode(key string, rev int64, value []byte) pending {
	p := pending{key: key, rev: rev, value: value}
	bk, err := a.cfg.Layout.ParseBatch(key)
	if err != nil {
		p.bad = err.Error()
		return p
	}
	b, err := ops.DecodeBatch(value)
	if err != nil {
		p.bad = err.Error()
		return p
	}
	if b.Name != bk.Name || b.Incarnation != bk.Incarnation || b.ID != bk.ID {
		p.bad = "record does not match its key"
		return p
	}
	if err := ops.ValidateBatch(b.Ops, a.cfg.Limits); err != nil {
		p.bad = err.Error()
		return p
	}
	p.batch = b
	return p
}

// newestPerKey maps each memcached key to the position of its last
// operation among items.
func newestPerKey(items []pending) map[string]opPos {
	m := make(map[string]opPos)
	for _, it := range items {
		if it.batch == nil {
			continue
		}
		for i, o := range it.batch.Ops {
			m[o.Key] = opPos{rev: it.rev, idx: i}
		}
	}
	return m
}

// apply writes items to memcached in order, then commits the watermark and
// removes the items, in transactions of at most MaxBatchesPerCommit batches.
// All writes come before the first commit, so the watermark never passes an
// operation whose effect (its own write, or the newer write on its key that
// replaced it) is not in memcached yet.
func (a *applier) apply(ctx context.Context, items []pending, newest map[string]opPos) error {
	quarantine := make([]*QuarantineRecord, len(items))
	for n, it := range items {
		if it.batch == nil {
			q := quarantineRecord(it, it.bad)
			quarantine[n] = &q
			continue
		}
		var rejected []string
		for i, o := range it.batch.Ops {
			if newest[o.Key] != (opPos{rev: it.rev, idx: i}) {
				a.stats.Skipped.Add(1)
				continue
			}
			w := Write{Token: tokenseq.Token{Revision: it.rev}, Index: i, Name: it.batch.Name, Incarnation: it.batch.Incarnation, Op: o, Term: a.term}
			err := a.write(ctx, w)
			if errors.Is(err, memfence.ErrRejected) {
				rejected = append(rejected, fmt.Sprintf("operation %d (%s %q): %v", i, o.Kind, o.Key, err))
				continue
			}
			if err != nil {
				return err
			}
		}
		if len(rejected) > 0 {
			q := quarantineRecord(it, strings.Join(rejected, "; "))
			quarantine[n] = &q
		}
	}
	for len(items) > 0 {
		n := min(len(items), a.cfg.MaxBatchesPerCommit)
		if err := a.commit(ctx, items[:n], quarantine[:n]); err != nil {
			return err
		}
		items, quarantine = items[n:], quarantine[n:]
	}
	return nil
}

// write writes one operation, retrying transient memcached failures until
// it succeeds, leadership is lost, or ctx ends.
func (a *applier) write(ctx context.Context, w Write) error {
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		if !a.lead.Valid() {
			return ErrNotLeader
		}
		if a.cfg.Hooks.BeforeWrite != nil {
			a.cfg.Hooks.BeforeWrite(ctx, w)
		}
		var err error
		switch w.Op.Kind {
		case ops.KindSet:
			err = a.cfg.Memcached.Set(w.Op.Key, w.Op.Value, w.Op.ExpirationSeconds(), w.Term)
		case ops.KindDelete:
			err = a.cfg.Memcached.Delete(w.Op.Key, w.Term)
		}
		switch {
		case err == nil:
			a.stats.Applied.Add(1)
			if a.cfg.Hooks.AfterWrite != nil {
				a.cfg.Hooks.AfterWrite(w)
			}
			return nil
		case errors.Is(err, memfence.ErrFenced):
			a.log.Warn("write fenced: a newer leader wrote this key", "key", w.Op.Key, "term", w.Term, "err", err)
			return err
		case errors.Is(err, memfence.ErrRejected):
			return err
		}
		a.stats.Retries.Add(1)
		d := backoff.Next()
		a.log.Warn("memcached write failed; will retry", "key", w.Op.Key, "token", w.Token.String(), "err", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// commit records the watermark and removes the applied batches in one
// transaction that succeeds only while this node is leader.
func (a *applier) commit(ctx context.Context, items []pending, quarantine []*QuarantineRecord) error {
	if len(items) == 0 {
		return nil
	}
	wm := tokenseq.Token{Revision: items[len(items)-1].rev}
	if wm.Less(a.wm) {
		wm = a.wm
	}
	// quarantine[i] is the record set aside for items[i], nil for most.
	var setAside []*QuarantineRecord
	for _, q := range quarantine {
		if q != nil {
			setAside = append(setAside, q)
		}
	}
	txnOps := make([]clientv3.Op, 0, 1+len(items)+len(setAside))
	txnOps = append(txnOps, clientv3.OpPut(a.cfg.Layout.Applied(), wm.String()))
	for _, it := range items {
		txnOps = append(txnOps, clientv3.OpDelete(it.key))
	}
	for _, q := range setAside {
		rec, _ := json.Marshal(q)
		txnOps = append(txnOps, clientv3.OpPut(a.cfg.Layout.Quarantine(q.Token), string(rec)))
	}
	resp, err := a.cfg.Client.Txn(ctx).If(a.lead.Guard()).Then(txnOps...).Commit()
	if err != nil {
		return fmt.Errorf("applier: commit watermark %s: %w", wm, err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	a.wm = wm
	a.stats.Commits.Add(1)
	a.stats.Batches.Add(uint64(len(items)))
	for _, q := range setAside {
		a.stats.Quarantined.Add(1)
		a.log.Error("record set aside", "key", q.Key, "token", q.Token, "reason", q.Reason)
	}
	return nil
}
