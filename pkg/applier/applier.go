// Package applier is the leader's write path: it applies pending batches to
// memcached in token order, then records the new applied watermark and
// removes the applied batches in one etcd transaction guarded by the
// leadership.
//
// Order (G2): batches are applied in rounds of at most MaxBatchesPerCommit,
// each committed only once all its writes are made, so the watermark,
// WaitApplied and the drain barrier order everything. Within a round only
// the newest operation on each key is written, in steps of up to
// WriteConcurrency writes and at most one write of each registration name
// per step: each key's and each name's operations land in token order;
// writes of different names in one round may land in either order.
//
// Replay (G3, G6): a round is written only once the commit of the round
// before the previous one is done, so at most ReplayHeadBatches batches past
// the watermark are ever written and not committed. A new leader's first
// round, the replay head, is exactly those batches, written (newest
// operation per key) before its first commit: whatever a predecessor wrote
// is no newer, so no key goes back, and since writes are idempotent,
// writing them again is harmless (exactly once in effect).
//
// Reading: the leader writes a takeover mark, then reads etcd's history with
// a watch from the watermark's revision into a bounded inbox; the replay
// head ends at the mark. Only when etcd has compacted that history are the
// pending batches read with one range read. memcached being down leaves
// batches pending and retried, never dropped; a record that cannot be
// decoded, or an operation memcached refuses for good, is set aside under
// the quarantine prefix so that it cannot stall the leader.
package applier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Errors of the applier.
var (
	// ErrNotLeader means leadership was lost while applying; the caller
	// should stop and campaign again.
	ErrNotLeader = election.ErrNotLeader
	// ErrHistoryCompacted ends a watch of pending batches when etcd has
	// compacted the history it reads; the applier then reads the pending
	// batches with a range read (see Hooks.WatchResponse).
	ErrHistoryCompacted = errors.New("applier: etcd history compacted")
)

// QuarantineRecord is what is stored under the quarantine prefix. It keeps
// an excerpt of the record, not all of it, so that setting aside a large
// record cannot push the commit transaction over etcd's request size limit.
type QuarantineRecord struct {
	// Key is the record's etcd key.
	Key string `json:"key"`
	// Token is the revision of the record's token (the transaction that
	// stored it).
	Token int64 `json:"token"`
	// Index is the record's index within its transaction (the rest of its
	// token), when the record could be read far enough to tell.
	Index uint32 `json:"index,omitempty"`
	// Reason says why the record was set aside.
	Reason string `json:"reason"`
	// ValueBytes is the size of the whole record.
	ValueBytes int `json:"value_bytes"`
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
	return QuarantineRecord{
		Key: it.key, Token: it.tok.Revision, Index: it.tok.Index, Reason: reason, ValueBytes: len(it.value), Excerpt: ex,
	}
}

type applier struct {
	cfg    Config
	lead   *election.Leadership
	term   uint32
	log    *slog.Logger
	stats  *Stats
	wm     tokenseq.Token
	tracer trace.Tracer // nil: no tracing
}

// pending is one batch record read from etcd.
type pending struct {
	mark  bool  // the takeover mark, not a batch: everything before it was read
	seen  int64 // when it was read, unix nanoseconds
	key   string
	tok   tokenseq.Token // the transaction's revision, the record's index
	value []byte
	batch *ops.Batch // nil when bad
	bad   string
	span  trace.Span // the apply's span from its round's writes to its commit; nil when not traced
}

// opPos is the position of an operation: its batch's token and its index
// in the batch.
type opPos struct {
	tok tokenseq.Token
	idx int
}

// Run applies pending batches until ctx ends or leadership is lost. It
// returns ErrNotLeader or memfence.ErrFenced when this node must stop acting
// as leader, a *config.FieldError for an invalid cfg, and other errors (a
// broken watch) after which it may be run again.
func Run(ctx context.Context, cfg Config, lead *election.Leadership) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return run(ctx, cfg.withDefaults(), lead, nil)
}

// run is Run of a valid cfg with defaults, reading on from what a standby
// read (st, which may be nil).
func run(ctx context.Context, cfg Config, lead *election.Leadership, st *followState) error {
	if st != nil {
		defer st.watch.cancel()
	}
	if lead.Term > memfence.MaxTerm {
		return fmt.Errorf("applier: %w: term %d", memfence.ErrTermExhausted, lead.Term)
	}
	a := &applier{cfg: cfg, lead: lead, term: uint32(lead.Term), log: cfg.Logger, stats: cfg.Stats}
	if cfg.TracerProvider != nil {
		a.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	a.stats.Running.Store(true)
	defer a.stats.Running.Store(false)
	wm, _, err := tokenseq.Watermark(ctx, cfg.Etcd, cfg.Layout)
	if err != nil {
		return err
	}
	a.wm = wm
	a.stats.Watermark.Store(wm.Revision)
	mark, err := a.putTakeoverMark(ctx)
	if err != nil {
		return err
	}
	return a.follow(ctx, mark, st)
}

// putTakeoverMark writes the takeover mark, guarded by the leadership, and
// returns its revision: every batch accepted before the takeover has a lower
// one.
func (a *applier) putTakeoverMark(ctx context.Context) (int64, error) {
	resp, err := a.cfg.Etcd.Txn(ctx).If(a.lead.Guard()).
		Then(clientv3.OpPut(a.cfg.Layout.TakeoverMark(), strconv.FormatUint(a.lead.Term, 10))).Commit()
	if err != nil {
		return 0, fmt.Errorf("applier: write takeover mark: %w", err)
	}
	a.stats.seeRevision(resp.Header.Revision)
	if !resp.Succeeded {
		return 0, ErrNotLeader
	}
	return resp.Header.Revision, nil
}

// follow streams the pending batches after the watermark, then every new
// one, in token order, and applies them in rounds of at most
// MaxBatchesPerCommit batches. A pump goroutine receives them into an inbox
// while the applier is busy writing and committing, so each round takes
// everything that arrived meanwhile: under load, many batches share a
// commit.
//
// The first round is the replay head (see takeHead), applied together
// (newest operation per key, every write before the first commit).
func (a *applier) follow(ctx context.Context, mark int64, st *followState) error {
	in := newInbox(a.cfg.MaxInboxBatches)
	in.stats = a.stats
	defer in.unpublish()
	pctx, cancel := context.WithCancel(ctx)
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		a.pump(pctx, feed{in: in, wm: a.wm, mark: mark}, st)
	}()
	defer func() {
		cancel()
		in.close()
		<-pumped
	}()
	head, takes, err := takeHead(ctx, in)
	if err != nil {
		return err
	}
	if len(head) > 0 {
		a.log.Info("replaying pending batches", "batches", len(head), "watermark", a.wm.String(), "term", a.term)
		if err := a.apply(ctx, head, newestPerKey(head)); err != nil {
			return err
		}
	}
	in.done(takes)
	// From here on, a round's commit runs while the next round is written:
	// at most two rounds are written and not committed, which is what the
	// replay head covers (ReplayHeadBatches).
	var committing chan error // the commit in flight, if any
	defer func() {
		if committing != nil {
			<-committing
		}
	}()
	for {
		chunk, err := in.take(ctx, a.cfg.MaxBatchesPerCommit)
		if err != nil {
			return err
		}
		chunk = slices.DeleteFunc(chunk, func(it pending) bool { return it.mark })
		if len(chunk) == 0 {
			in.done(1)
			continue
		}
		quarantine, err := a.writeRound(ctx, chunk, newestPerKey(chunk))
		if err != nil {
			return err
		}
		if committing != nil {
			err := <-committing
			committing = nil
			if err != nil {
				a.endApplies(chunk, 0, err)
				return err
			}
		}
		committing = make(chan error, 1)
		go func(done chan<- error) {
			err := a.commitRound(ctx, chunk, quarantine)
			if err == nil {
				in.done(1)
			}
			done <- err
		}(committing)
	}
}

// takeHead takes the replay head from in: every batch up to the takeover
// mark, or the first ReplayHeadBatches of them when there are more. It
// covers whatever a predecessor may have written past the watermark; see
// the package documentation. The head counts valid batches only: records
// set aside write nothing, and one at the watermark may be handed over
// again (see applied). It returns the head and how many takes it took.
func takeHead(ctx context.Context, in *inbox) ([]pending, int, error) {
	var head []pending
	valid, takes := 0, 0
	for caughtUp := false; !caughtUp && valid < ReplayHeadBatches; {
		chunk, err := in.take(ctx, ReplayHeadBatches-valid)
		if err != nil {
			return nil, 0, err
		}
		takes++
		for _, it := range chunk {
			if it.mark {
				caughtUp = true
				continue
			}
			head = append(head, it)
			if it.batch != nil {
				valid++
			}
		}
	}
	return head, takes, nil
}

// decode turns a stored record into a pending batch, marking it bad when it
// cannot be decoded or does not match its key.
func (a *applier) decode(key string, rev int64, value []byte) pending {
	p := pending{key: key, tok: tokenseq.Token{Revision: rev}, value: value, seen: readTime()}
	// A record too broken to carry an index is ordered at index zero.
	p.tok.Index, _ = ops.RecordIndex(value)
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
			m[o.Key] = opPos{tok: it.tok, idx: i}
		}
	}
	return m
}

// apply writes items to memcached and then commits them; see writeRound
// and commitRound.
func (a *applier) apply(ctx context.Context, items []pending, newest map[string]opPos) error {
	quarantine, err := a.writeRound(ctx, items, newest)
	if err != nil {
		return err
	}
	return a.commitRound(ctx, items, quarantine)
}

// writeRound writes items to memcached (each lane group's in token order,
// different groups' together; see writeAll) and returns, for each item,
// the record to set aside for it (nil for most). It returns only once every
// write is made, so a commit after it never passes an operation whose effect
// (its own write, or the newer write on its key that replaced it) is not in
// memcached yet.
func (a *applier) writeRound(ctx context.Context, items []pending, newest map[string]opPos) ([]*QuarantineRecord, error) {
	start := time.Now()
	a.startApplies(ctx, items, newest)
	quarantine := make([]*QuarantineRecord, len(items))
	var writes []plannedWrite
	groups := laneGroups(items)
	for n, it := range items {
		if it.batch == nil {
			q := quarantineRecord(it, it.bad)
			quarantine[n] = &q
			continue
		}
		for i, o := range it.batch.Ops {
			if newest[o.Key] != (opPos{tok: it.tok, idx: i}) {
				a.stats.Skipped.Add(1)
				continue
			}
			w := Write{Token: it.tok, Index: i, Name: it.batch.Name, Incarnation: it.batch.Incarnation, Op: o, Term: a.term}
			writes = append(writes, plannedWrite{item: n, w: w, group: groups[it.batch.Name]})
		}
	}
	// The writes touch distinct keys; writeAll makes each lane group's in
	// token order, different groups' together, and returns only once all
	// are made (or one failed).
	rejected, err := a.writeAll(ctx, writes)
	if err != nil {
		a.endApplies(items, 0, err)
		return nil, err
	}
	if keep := a.cfg.BeforeCommit; keep != nil && len(writes) > 0 {
		ws := make([]Write, len(writes))
		for i, pw := range writes {
			ws[i] = pw.w
		}
		if err := keep(ctx, ws); err != nil {
			err = fmt.Errorf("applier: before commit: %w", err)
			a.endApplies(items, 0, err)
			return nil, err
		}
	}
	a.writtenApplies(items, rejected)
	a.stats.Rounds.Add(1)
	if a.cfg.Hooks.Round != nil {
		a.cfg.Hooks.Round(len(items), time.Since(start))
	}
	for n, why := range rejected {
		q := quarantineRecord(items[n], strings.Join(why, "; "))
		quarantine[n] = &q
	}
	return quarantine, nil
}

// commitRound commits the watermark and removes items (written by
// writeRound), in order, in transactions of at most MaxTxnOps operations.
func (a *applier) commitRound(ctx context.Context, items []pending, quarantine []*QuarantineRecord) error {
	start, batches := time.Now(), len(items)
	if hook := a.cfg.Hooks.Commit; hook != nil {
		defer func() {
			if len(items) == 0 {
				hook(batches, time.Since(start))
			}
		}()
	}
	for len(items) > 0 {
		n, txnOps := 0, 1 // the watermark put
		for n < len(items) {
			k := 1
			if quarantine[n] != nil {
				k = 2
			}
			if txnOps+k > MaxTxnOps {
				break
			}
			n, txnOps = n+1, txnOps+k
		}
		if err := a.commit(ctx, items[:n], quarantine[:n]); err != nil {
			a.endApplies(items, 0, err)
			return err
		}
		items, quarantine = items[n:], quarantine[n:]
	}
	return nil
}

// settled records the outcome err of writing w and reports whether the
// write is finished: made (nil), or refused for good or fatal (the error
// returned). A transient failure is not finished: the write must be made
// again.
func (a *applier) settled(w Write, err error) (bool, error) {
	if err != nil && a.cfg.Hooks.MemcachedError != nil {
		a.cfg.Hooks.MemcachedError(err)
	}
	switch {
	case err == nil:
		a.stats.Applied.Add(1)
		if a.cfg.Hooks.AfterWrite != nil {
			a.cfg.Hooks.AfterWrite(w)
		}
		return true, nil
	case errors.Is(err, memfence.ErrFenced):
		a.stats.Fenced.Add(1)
		a.log.Warn("write fenced: a newer leader wrote this key", "key", w.Op.Key, "term", w.Term, "err", err)
		return true, err
	case errors.Is(err, memfence.ErrRejected):
		return true, err
	}
	a.stats.Retries.Add(1)
	return false, err
}

// retry makes w again, by itself and from a fresh read, after it failed
// transiently with err, waiting longer after each failure, until it is
// finished (see settled), leadership is lost, or ctx ends.
func (a *applier) retry(ctx context.Context, w Write, err error) error {
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		d := backoff.Next()
		a.log.Warn("memcached write failed; will retry", "key", w.Op.Key, "token", w.Token.String(), "err", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return ctx.Err()
		}
		if !a.lead.Valid() {
			return ErrNotLeader
		}
		if a.cfg.Hooks.BeforeWrite != nil {
			a.cfg.Hooks.BeforeWrite(ctx, w)
		}
		if w.Op.Kind == ops.KindDelete {
			err = a.cfg.Memcached.Delete(ctx, w.Op.Key, w.Term)
		} else {
			err = a.cfg.Memcached.Set(ctx, w.Op.Key, w.Op.Value, w.Op.ExpirationSeconds(), w.Term)
		}
		var done bool
		if done, err = a.settled(w, err); done {
			return err
		}
	}
}

// commit records the watermark and removes the applied batches in one
// transaction that succeeds only while this node is leader.
func (a *applier) commit(ctx context.Context, items []pending, quarantine []*QuarantineRecord) error {
	if len(items) == 0 {
		return nil
	}
	wm := tokenseq.Max(items[len(items)-1].tok, a.wm)
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
		txnOps = append(txnOps, clientv3.OpPut(a.cfg.Layout.Quarantine(q.Token, q.Index, q.Key), string(rec)))
	}
	resp, err := a.cfg.Etcd.Txn(ctx).If(a.lead.Guard()).Then(txnOps...).Commit()
	if err != nil {
		return fmt.Errorf("applier: commit watermark %s: %w", wm, err)
	}
	a.stats.seeRevision(resp.Header.Revision)
	if !resp.Succeeded {
		return ErrNotLeader
	}
	a.wm = wm
	a.stats.Watermark.Store(wm.Revision)
	a.stats.Commits.Add(1)
	a.stats.Batches.Add(uint64(len(items)))
	a.endApplies(items, resp.Header.Revision, nil)
	for _, q := range setAside {
		a.stats.Quarantined.Add(1)
		a.log.Error("record set aside", "key", q.Key, "token", q.Token, "reason", q.Reason)
	}
	return nil
}
