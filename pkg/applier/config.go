package applier

import (
	"cmp"
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// MaxTxnOps is etcd's default --max-txn-ops (tokenseq.MaxTxnOps): a commit
// transaction (one watermark put, a delete per batch, a quarantine put per
// batch set aside) never has more operations.
const MaxTxnOps = tokenseq.MaxTxnOps

// ReplayHeadBatches bounds the batches a leader has written to memcached and
// not yet committed, and is the size of a replay's head (see the package
// documentation): one round of at most ReplayHeadBatches/2 batches is
// committed while the next one is written. Every leader must use the same
// value: a successor's head must cover whatever its predecessor may have
// written.
const ReplayHeadBatches = 2 * DefaultMaxBatchesPerCommit

// Defaults of Config.
const (
	// DefaultMaxBatchesPerCommit is the most batches one round applies, and
	// the largest MaxBatchesPerCommit allowed: when none is set aside, its
	// commit is one transaction of MaxTxnOps operations; a round with
	// batches set aside is committed in several.
	DefaultMaxBatchesPerCommit = MaxTxnOps - 1
	// DefaultMaxInboxBatches bounds the batches the live path holds in
	// memory.
	DefaultMaxInboxBatches = 4096
	// DefaultWriteConcurrency is the most memcached writes sent at once.
	DefaultWriteConcurrency = 8
)

// Config configures the applier. Zero values mean the defaults noted.
type Config struct {
	// Etcd is the etcd client the pending batches are read and committed
	// with.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// Memcached is the fenced writer the operations are written with.
	Memcached *memfence.Writer
	// Limits validate records, which may have been written by something
	// other than this coordinator; zero means memcached's defaults.
	Limits ops.Limits
	// MaxBatchesPerCommit bounds the batches of one round, written together
	// and then committed (in one transaction unless some are set aside). It
	// is at most DefaultMaxBatchesPerCommit, so that two rounds fit in
	// ReplayHeadBatches; zero means DefaultMaxBatchesPerCommit.
	MaxBatchesPerCommit int
	// MaxInboxBatches bounds the batches received from the watch and not yet
	// applied (while memcached is down, say): beyond it, the applier holds
	// at most the watch responses that did not fit (see stream); when one
	// more comes, the watch is cancelled, and opened again where it stopped
	// once there is room, so neither the applier nor the etcd client buffers
	// a backlog. Zero means DefaultMaxInboxBatches.
	MaxInboxBatches int
	// WriteConcurrency is the most memcached writes made at once: a round's
	// writes are sent in steps of at most this many, in one pipeline per
	// server, holding at most one write of each registration name, so each
	// name's writes, and each key's, stay in token order; writes of
	// different names within a round may land in any order. 1 writes
	// everything one after the other, in token order across names. Zero
	// means DefaultWriteConcurrency.
	WriteConcurrency int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Stats, when set, is updated as the applier works.
	Stats *Stats
	// Hooks observe writes; for tests and tracing.
	Hooks Hooks
	// TracerProvider, when set, traces the apply of every batch whose
	// record carries a trace context: a span per batch (SpanApply) in the
	// trace of the submission that stored it. Nil traces nothing.
	TracerProvider trace.TracerProvider
	// BeforeCommit, when set, is called with a round's writes (the newest
	// operation of each key) once they are all made in memcached and
	// before the round is committed; an error fails the round, which the
	// next applier replays. It keeps a copy of what was written (see
	// node.Config.RestoreOnRestart).
	BeforeCommit func(ctx context.Context, writes []Write) error
}

// Validate checks the config; its errors are *config.FieldError.
func (cfg *Config) Validate() error {
	const pkg = "applier"
	switch {
	case cfg.Etcd == nil:
		return config.Errorf(pkg, "Etcd", "is nil")
	case cfg.Memcached == nil:
		return config.Errorf(pkg, "Memcached", "is nil")
	case cfg.Layout.Prefix() == "":
		return config.Errorf(pkg, "Layout", "is empty")
	case cfg.MaxBatchesPerCommit < 0:
		return config.Errorf(pkg, "MaxBatchesPerCommit", "%d is negative", cfg.MaxBatchesPerCommit)
	case cfg.MaxBatchesPerCommit > DefaultMaxBatchesPerCommit:
		return config.Errorf(pkg, "MaxBatchesPerCommit", "%d is over %d (two rounds must fit in the replay head of %d)",
			cfg.MaxBatchesPerCommit, DefaultMaxBatchesPerCommit, ReplayHeadBatches)
	case cfg.MaxInboxBatches < 0:
		return config.Errorf(pkg, "MaxInboxBatches", "%d is negative", cfg.MaxInboxBatches)
	case cfg.WriteConcurrency < 0:
		return config.Errorf(pkg, "WriteConcurrency", "%d is negative", cfg.WriteConcurrency)
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (cfg Config) withDefaults() Config {
	cfg.MaxBatchesPerCommit = cmp.Or(cfg.MaxBatchesPerCommit, DefaultMaxBatchesPerCommit)
	cfg.MaxInboxBatches = cmp.Or(cfg.MaxInboxBatches, DefaultMaxInboxBatches)
	cfg.WriteConcurrency = cmp.Or(cfg.WriteConcurrency, DefaultWriteConcurrency)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	return cfg
}

// Hooks observe the applier's writes. BeforeWrite is called concurrently
// for the writes of one step (see Config.WriteConcurrency), which go out
// together once every call has returned; both hooks are called one after
// the other and in token order for the writes of one name. A hook that
// records into shared state must synchronise.
type Hooks struct {
	// BeforeWrite runs after the leadership check, right before an
	// operation is written to memcached (again before each retry). ctx is
	// cancelled when leadership is lost.
	BeforeWrite func(ctx context.Context, w Write)
	// AfterWrite runs after an operation was written to memcached.
	AfterWrite func(w Write)
	// WatchResponse runs each time the leader receives a response of its
	// watch of pending batches, before it hands any of it over: events is
	// how many events the response carries, held how many read events wait
	// for room in the inbox (the response's included), and err is
	// what ends the watch, if the response does (ErrHistoryCompacted when
	// etcd has compacted the history the watch reads).
	WatchResponse func(events, held int, err error)
	// Round runs after a round's writes are all made: batches is how many
	// batches the round holds, took how long writing them took.
	Round func(batches int, took time.Duration)
	// Commit runs after a round is committed: batches is how many batches
	// the commit removed, took how long its transactions took.
	Commit func(batches int, took time.Duration)
	// MemcachedError runs for every memcached write or read that failed,
	// with its error: memfence.ErrFenced, memfence.ErrRejected,
	// memfence.ErrContended, a context error, or a transient failure (a
	// timeout, a refused connection). The error names the server that
	// failed, a *memfence.ServerError (a read of several servers that
	// failed at more than one holds one of each: memfence.ServerErrors).
	// It runs on the failure path only.
	MemcachedError func(err error)
}

// Write is one operation as the applier writes it.
type Write struct {
	// Token is the batch's token.
	Token tokenseq.Token
	// Index is the operation's position in its batch.
	Index int
	// Name and Incarnation are who submitted the batch.
	Name        string
	Incarnation int64
	// Op is the operation.
	Op ops.Op
	// Term is the leader's term, the fence the write carries.
	Term uint32
}

// Stats counts the applier's work. Fields are updated atomically.
type Stats struct {
	Applied     atomic.Uint64 // operations written to memcached
	Skipped     atomic.Uint64 // operations overwritten by a newer one before being written
	Batches     atomic.Uint64 // batches removed as applied or set aside
	Quarantined atomic.Uint64 // records or operations set aside
	Retries     atomic.Uint64 // memcached write attempts that failed transiently
	Commits     atomic.Uint64 // watermark transactions
	// FromStandby counts the batches a standby held when its node won (see
	// Standby): read before the takeover, not after it.
	FromStandby atomic.Uint64
	// Watches counts the watches of the pending batches the applier read
	// from: its first (its own, or the one a standby handed over), and one
	// more each time it fell behind a watch and opened it again (see
	// stream).
	Watches atomic.Uint64
	// StandbyHeld is the number of batches the node's standby holds (see
	// Standby); zero while it leads or is behind.
	StandbyHeld atomic.Int64
	// StandbyWatches counts the watches a standby opened: one, and one
	// more each time it follows again after falling behind.
	StandbyWatches atomic.Uint64
	// StandbyCounts counts the times a standby that fell behind counted
	// the pending batches to learn whether it could follow again.
	StandbyCounts atomic.Uint64
	// StandbyBehind is true while the node's standby has fallen behind
	// (more batches pending than it holds) and has not yet found the
	// backlog small enough to follow again.
	StandbyBehind atomic.Bool

	// Rounds counts the rounds written to memcached.
	Rounds atomic.Uint64
	// Fenced counts the writes memcached refused because a newer leader
	// had written the key (memfence.ErrFenced): a former leader stopped.
	Fenced atomic.Uint64
	// Running is true while the applier runs (the node leads and applies).
	Running atomic.Bool
	// Watermark is the revision of the applied watermark as the node last
	// read or committed it (as leader or standby).
	Watermark atomic.Int64
	// EtcdRevision is the highest etcd revision the applier or the standby
	// has seen in a response.
	EtcdRevision atomic.Int64
	// PendingBatches and PendingOps are the batches, and their operations,
	// the leader has read and not committed yet; zero on a standby.
	PendingBatches atomic.Int64
	PendingOps     atomic.Int64
	// OldestPending is when the oldest of those batches was read by this
	// node (unix nanoseconds; a standby's read counts), zero when there is
	// none.
	OldestPending atomic.Int64
}

// seeRevision records that etcd answered at revision rev.
func (s *Stats) seeRevision(rev int64) {
	for {
		cur := s.EtcdRevision.Load()
		if rev <= cur || s.EtcdRevision.CompareAndSwap(cur, rev) {
			return
		}
	}
}
