package tokenseq

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/internal/etcderr"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// Group commit.
//
// Submissions made while a transaction is under way wait in a queue; when a
// transaction slot frees up, everything waiting (within the limits below) is
// sent as one transaction. It compares the registration of every name in it
// against the incarnation submitted under (G1 holds for each batch: the
// check is in the transaction that stores it) and that none of the batch ids
// is stored yet, and it puts every batch, in queue order. All of them get
// the transaction's revision; the position in the transaction is the
// token's Index, which the record carries, so that tokens stay unique and
// totally ordered.
//
// A failed transaction carries no Else branch (its reads would be paid by
// every transaction, for the rare one that fails). Its members are settled
// by a read at the revision it failed at: already stored (a resend), voided,
// refused (its incarnation is not current) or, when its own checks passed,
// put back at the head of the queue for the next one. A transaction etcd
// rejects before applying it (a receipt's lease is gone, a limit exceeded)
// is retried one submission per transaction, so each gets the answer it
// would have had alone.
//
// While a transaction is under way, a free slot waits until the queue holds
// as many submissions as the last group sent; the end of the transaction
// under way sends whatever is queued then. Otherwise callers that each wait
// for their answer settle into more, smaller groups, and every transaction
// costs a raft round of its own. BENCHMARKS.md has the figures.

// Defaults and limits of group commit.
const (
	// DefaultMaxGroupBatches bounds the batches of one transaction when
	// SubmitterConfig.MaxGroupBatches is zero.
	DefaultMaxGroupBatches = 64
	// DefaultMaxInFlight bounds the transactions under way at once when
	// SubmitterConfig.MaxInFlight is zero.
	DefaultMaxInFlight = 2
	// MaxGroupBytes bounds the records of one transaction, well within
	// etcd's default request limit of 1.5 MiB. A batch larger than this is
	// sent by itself.
	MaxGroupBytes = 1 << 20
	// MaxTxnOps is etcd's default --max-txn-ops: a transaction may hold at
	// most this many compares, and this many operations per branch.
	MaxTxnOps = 128
)

// submission states, guarded by Submitter.mu.
const (
	stateQueued = iota
	stateSent
	stateDropped // its caller gave up before it was sent
)

// submission is one SubmitRequest on its way through a group.
type submission struct {
	ctx        context.Context
	req        Request
	rec        []byte
	regKey     string
	batchKey   string
	receiptKey string // "" without a lease
	freshID    bool   // the id is random and new: no need to check for it
	state      int
	done       chan struct{}
	span       trace.Span // the submission's span; nil when not traced

	// Set by the transaction's sender before done is closed.
	tok     Token
	err     error
	refused bool                        // the incarnation check failed
	regRead *etcdserverpb.RangeResponse // the registration as read then
	readRev int64                       // the revision it was read at
	alone   bool                        // send it again, by itself
}

func (s *Submitter) newSubmission(ctx context.Context, req Request) *submission {
	c := &submission{
		ctx:      ctx,
		req:      req,
		rec:      (&ops.Batch{Name: req.Name, Incarnation: req.Incarnation, ID: req.ID, Ops: req.Ops, Trace: s.traceContextOf(ctx)}).Encode(),
		regKey:   s.layout.Reg(req.Name),
		batchKey: s.layout.Batch(req.Name, req.Incarnation, req.ID),
		done:     make(chan struct{}),
	}
	if req.Lease != 0 {
		c.receiptKey = s.layout.Receipt(req.Name, req.Incarnation, req.ID)
	}
	return c
}

// submit sends c, in a group when others are waiting too, and returns its
// outcome.
func (s *Submitter) submit(ctx context.Context, c *submission) (Token, error) {
	if s.cfg.MaxGroupBatches <= 1 {
		return s.sendAlone(ctx, c)
	}
	s.mu.Lock()
	s.queue = append(s.queue, c)
	busy := s.inflight > 0
	s.mu.Unlock()
	if busy {
		// Other submissions are under way, so more are likely being made at
		// this moment (callers that were just answered, say): let them join
		// the queue before a free slot takes it, for larger groups.
		runtime.Gosched()
	}
	s.mu.Lock()
	groups := s.takeGroupsLocked()
	s.mu.Unlock()
	s.start(groups)
	select {
	case <-c.done:
	case <-ctx.Done():
		s.mu.Lock()
		sent := c.state == stateSent
		if c.state == stateQueued {
			s.dropLocked(c)
		}
		s.mu.Unlock()
		if sent {
			return Zero, fmt.Errorf("tokenseq: submit: outcome unknown: %w", ctx.Err())
		}
		return Zero, fmt.Errorf("tokenseq: submit: not sent: %w", ctx.Err())
	}
	return s.outcome(ctx, c)
}

// outcome turns what the sender found into SubmitRequest's result.
func (s *Submitter) outcome(ctx context.Context, c *submission) (Token, error) {
	switch {
	case c.alone:
		return s.sendAlone(ctx, c)
	case c.refused:
		return Zero, s.refusal(ctx, c.req.Name, c.req.Incarnation, c.readRev, c.regRead)
	}
	return c.tok, c.err
}

// sendAlone sends c in a transaction of its own, on the caller's goroutine.
func (s *Submitter) sendAlone(ctx context.Context, c *submission) (Token, error) {
	c.alone = false
	requeue, err := s.send(ctx, []*submission{c})
	switch {
	case etcderr.IsLeaseNotFound(err):
		// Rejected before anything was stored: the lease is gone.
		return Zero, &RefusedError{Name: c.req.Name, Incarnation: c.req.Incarnation, cause: ErrExpired}
	case err != nil:
		return Zero, fmt.Errorf("tokenseq: submit: %w", err)
	case len(requeue) > 0:
		// Cannot happen: a failed transaction of one batch always says why.
		return Zero, fmt.Errorf("tokenseq: submit: %q incarnation %d batch %s: transaction failed without a reason",
			c.req.Name, c.req.Incarnation, c.req.ID)
	}
	return s.outcome(ctx, c)
}

// dropLocked removes a queued submission whose caller gave up.
func (s *Submitter) dropLocked(c *submission) {
	c.state = stateDropped
	for i, q := range s.queue {
		if q == c {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return
		}
	}
}

// takeGroupsLocked takes groups from the queue while transaction slots are
// free.
func (s *Submitter) takeGroupsLocked() [][]*submission {
	var groups [][]*submission
	for s.inflight < s.cfg.MaxInFlight && len(s.queue) > 0 {
		if s.inflight > 0 && len(s.queue) < s.lastGroup {
			break // the transaction under way will send it when it ends
		}
		g := s.takeGroupLocked()
		if len(g) == 0 {
			break
		}
		s.inflight++
		s.lastGroup = len(g)
		groups = append(groups, g)
	}
	return groups
}

// takeGroupLocked takes the oldest queued submissions that fit one
// transaction: at most MaxGroupBatches batches and MaxGroupBytes of records,
// within MaxTxnOps, one incarnation and lease per name and one submission
// per batch id. The
// others stay queued in their order.
func (s *Submitter) takeGroupLocked() []*submission {
	var (
		g      []*submission
		incs   = make(map[string]int64)
		leases = make(map[string]clientv3.LeaseID)
		keys   = make(map[string]bool)
		txnOps int
		bytes  int
	)
	rest := s.queue[:0]
	for i, c := range s.queue {
		if len(g) >= s.cfg.MaxGroupBatches {
			rest = append(rest, s.queue[i:]...)
			break
		}
		if c.ctx.Err() != nil {
			c.state = stateDropped // its caller is gone or about to be
			continue
		}
		cost := 1
		if c.receiptKey != "" {
			cost++
		}
		inc, seen := incs[c.req.Name]
		if !seen {
			cost++
			if c.req.Lease != 0 {
				cost++
			}
		}
		size := len(c.rec) + len(c.batchKey) + len(c.receiptKey)
		fits := (!seen || inc == c.req.Incarnation && leases[c.req.Name] == c.req.Lease) && !keys[c.batchKey] &&
			txnOps+cost <= MaxTxnOps && (len(g) == 0 || bytes+size <= MaxGroupBytes)
		if !fits {
			rest = append(rest, c)
			continue
		}
		incs[c.req.Name] = c.req.Incarnation
		leases[c.req.Name] = c.req.Lease
		keys[c.batchKey] = true
		txnOps += cost
		bytes += size
		c.state = stateSent
		g = append(g, c)
	}
	clear(s.queue[len(rest):])
	s.queue = rest
	return g
}

// start sends each group on a goroutine of its own.
func (s *Submitter) start(groups [][]*submission) {
	for _, g := range groups {
		go s.sendGroup(g)
	}
}

// sendGroup sends one group, settles its members, and starts whatever the
// freed slot allows.
func (s *Submitter) sendGroup(g []*submission) {
	ctx, release := groupContext(g)
	requeue, err := s.send(ctx, g)
	release()
	if err != nil {
		// Errors etcd returns before applying anything: each member is
		// sent again alone, so that one member's cause (a name the
		// client's etcd user may not write, a batch too large to share a
		// transaction) does not fail the others.
		notApplied := errors.Is(err, errFailedUnread) ||
			etcderr.IsLeaseNotFound(err) || errors.Is(err, rpctypes.ErrTooManyOps) ||
			errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrDuplicateKey) ||
			errors.Is(err, rpctypes.ErrPermissionDenied) || status.Code(err) == codes.ResourceExhausted
		for _, c := range g {
			if notApplied {
				c.alone = true
			} else {
				c.err = fmt.Errorf("tokenseq: submit: %w", err)
			}
		}
		requeue = nil
	}
	if len(requeue) == len(g) {
		// Nobody was settled, which a failed transaction rules out; do not
		// loop on it.
		for _, c := range requeue {
			c.alone = true
		}
		requeue = nil
	}
	back := make(map[*submission]bool, len(requeue))
	for _, c := range requeue {
		back[c] = true
	}
	s.mu.Lock()
	for _, c := range requeue {
		c.state = stateQueued
	}
	s.queue = append(requeue, s.queue...)
	s.inflight--
	groups := s.takeGroupsLocked()
	s.mu.Unlock()
	for _, c := range g {
		if !back[c] {
			close(c.done)
		}
	}
	s.start(groups)
}

// groupContext returns the context a group's transaction runs under: it
// ends when every member's caller has given up, not when the first one has.
func groupContext(g []*submission) (context.Context, func()) {
	if len(g) == 1 {
		return g[0].ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(g[0].ctx))
	var waiting atomic.Int32
	waiting.Store(int32(len(g)))
	stops := make([]func() bool, len(g))
	for i, c := range g {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// send stores the batches of g in one transaction. Members it settles get
// their result set (tok, err, or refused with the registration read); the
// members it returns passed their own checks in a transaction that another
// member failed, and must be sent again. An error means the transaction's
// outcome is unknown, or that etcd rejected it before applying it.
func (s *Submitter) send(ctx context.Context, g []*submission) ([]*submission, error) {
	ctx, span := s.startGroupTxn(ctx, g)
	requeue, rev, succeeded, err := s.sendTxn(ctx, g)
	if span != nil {
		endGroupTxn(span, rev, succeeded, err)
	}
	return requeue, err
}

// sendTxn is send; it also returns the revision the transaction was
// answered at and whether it succeeded.
func (s *Submitter) sendTxn(ctx context.Context, g []*submission) (_ []*submission, rev int64, succeeded bool, _ error) {
	puts := len(g)
	for _, c := range g {
		if c.receiptKey != "" {
			puts++
		}
	}
	var (
		names = make(map[string]bool)
		cmps  = make([]clientv3.Cmp, 0, puts)
		then  = make([]clientv3.Op, 0, puts)
	)
	for _, c := range g {
		if !names[c.req.Name] {
			names[c.req.Name] = true
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.regKey), "=", c.req.Incarnation))
			if c.req.Lease != 0 {
				// The receipt must live exactly as long as the incarnation
				// can submit: under the registration's own lease (G3).
				cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(c.regKey), "=", c.req.Lease))
			}
		}
	}
	for i, c := range g {
		if err := ops.SetRecordIndex(c.rec, uint32(i)); err != nil {
			return nil, 0, false, err
		}
		if !c.freshID {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.batchKey), "=", 0))
		}
		then = append(then, clientv3.OpPut(c.batchKey, string(c.rec)))
		if c.receiptKey != "" {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.receiptKey), "=", 0))
			then = append(then, clientv3.OpPut(c.receiptKey, receiptValue(uint32(i)), clientv3.WithLease(c.req.Lease)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Commit()
	if err != nil {
		return nil, 0, false, err
	}
	rev = resp.Header.Revision
	if resp.Succeeded {
		for i, c := range g {
			c.tok = Token{Revision: rev, Index: uint32(i)}
		}
		return nil, rev, true, nil
	}
	if s.failedTxn != nil {
		s.failedTxn(rev)
	}
	requeue, err := s.settleFailed(ctx, g, rev)
	return requeue, rev, false, err
}

// errFailedUnread means a transaction failed, so that it stored nothing, and
// the read that settles its members failed too: they are sent again, each
// alone, for an answer.
var errFailedUnread = errors.New("transaction failed and the read of why failed")

// settleFailed settles the members of g, whose transaction failed at
// revision rev, from a read of their registrations, batches and receipts at
// rev: the state the transaction's compares saw. It returns the members
// that passed their own checks. An error wraps errFailedUnread: nothing of g
// was stored, but the read that says why failed.
func (s *Submitter) settleFailed(ctx context.Context, g []*submission, rev int64) ([]*submission, error) {
	var (
		names = make(map[string]int) // name → position of its registration read
		gets  []clientv3.Op
	)
	for _, c := range g {
		if _, ok := names[c.req.Name]; !ok {
			names[c.req.Name] = len(gets)
			gets = append(gets, clientv3.OpGet(c.regKey, clientv3.WithRev(rev)))
		}
	}
	for _, c := range g {
		gets = append(gets, clientv3.OpGet(c.batchKey, clientv3.WithRev(rev)))
		if c.receiptKey != "" {
			gets = append(gets, clientv3.OpGet(c.receiptKey, clientv3.WithRev(rev)))
		}
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, fmt.Errorf("%w: read at revision %d: %w", errFailedUnread, rev, err)
	}
	var requeue []*submission
	pos := len(names)
	for _, c := range g {
		reads := []*etcdserverpb.ResponseOp{resp.Responses[names[c.req.Name]], resp.Responses[pos]}
		pos++
		if c.receiptKey != "" {
			reads = append(reads, resp.Responses[pos])
			pos++
		}
		f := readFindings(reads)
		tok, ok := f.accepted()
		switch {
		case ok:
			c.tok = tok
		case f.receipt != "":
			c.err = fmt.Errorf("%w: %q incarnation %d batch %s", ErrVoided, c.req.Name, c.req.Incarnation, c.req.ID)
		case f.reg != c.req.Incarnation:
			c.refused, c.readRev = true, rev
			c.regRead = reads[0].GetResponseRange()
		case c.req.Lease != 0 && f.regLease != c.req.Lease:
			c.err = leaseMismatch(c.req, f.regLease)
		default:
			requeue = append(requeue, c)
		}
	}
	return requeue, nil
}
