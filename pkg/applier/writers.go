package applier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// An apply call writes each memcached key at most once (only the newest
// operation per key of the call), so its writes touch distinct keys. They
// are queued by lane group (a registration name, or names whose operations
// in the call share a key; see laneGroups), each queue in token order, and
// made in steps. A step takes the next write of at most WriteConcurrency
// groups, those whose next write comes first, and sends them to
// memcached together: one pipeline per server (memfence.Writer.WriteAll).
// A group's next write is in a later step, and a step starts only once the
// one before it is done, so each name's writes land in token order; a key's
// writes keep theirs across calls because every write of a call is made
// before the call commits and the next call starts. Writes of different
// names in one step may land in any order.

// plannedWrite is one write of an apply call and the position, among the
// call's items, of the batch it belongs to.
type plannedWrite struct {
	item  int
	w     Write
	group string // the lane group: names whose writes stay in token order together
}

// rejection is an operation memcached refused for good, with the reason
// recorded when its batch is set aside.
type rejection struct {
	item   int
	reason string
}

// writeAll makes the writes of one apply call, in steps. It returns, for
// each item with operations memcached refused for good, the reasons in the
// batch's order; or the first fatal error (ErrNotLeader, memfence.ErrFenced,
// a context error), after which it makes no further step.
//
// It first reads the keys of all the writes with multi-key gets
// (memfence.Writer.Read), so that a fenced write costs a cas or an add and no
// read of its own. The read is only a first guess: each write is still
// conditional on what was read, and a write whose key changed since is made
// again from a fresh read.
func (a *applier) writeAll(ctx context.Context, writes []plannedWrite) (map[int][]string, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	snap := a.readAhead(ctx, writes)
	var rej []rejection
	for _, step := range schedule(writes, a.cfg.WriteConcurrency) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !a.lead.Valid() {
			return nil, ErrNotLeader
		}
		a.beforeWrites(ctx, step)
		mws := make([]memfence.Write, len(step))
		for i, pw := range step {
			o := pw.w.Op
			mws[i] = memfence.Write{Key: o.Key, Value: o.Value, Exptime: o.ExpirationSeconds(), Delete: o.Kind == ops.KindDelete}
		}
		// Settle every write of the step first (they were all sent), then
		// stop at a fatal error, or make again those that failed
		// transiently.
		errs := a.cfg.Memcached.WriteAll(ctx, snap, a.term, mws)
		var fatal error
		var again []int
		for i, werr := range errs {
			done, err := a.settled(step[i].w, werr)
			switch {
			case !done:
				again = append(again, i)
			case errors.Is(err, memfence.ErrRejected):
				rej = append(rej, rejected(step[i], err))
			case err != nil && fatal == nil:
				fatal = err
			}
		}
		if fatal != nil {
			return nil, fatal
		}
		for _, i := range again {
			err := a.retry(ctx, step[i].w, errs[i])
			switch {
			case errors.Is(err, memfence.ErrRejected):
				rej = append(rej, rejected(step[i], err))
			case err != nil:
				return nil, err
			}
		}
	}
	return reasons(rej), nil
}

// rejected is the rejection of pw, which memcached refused with err.
func rejected(pw plannedWrite, err error) rejection {
	o := pw.w.Op
	return rejection{item: pw.item, reason: fmt.Sprintf("operation %d (%s %q): %v", pw.w.Index, o.Kind, o.Key, err)}
}

// beforeWrites calls the BeforeWrite hook for each write of a step, at
// once, as the step's writes are made at once, and returns when every call
// has.
func (a *applier) beforeWrites(ctx context.Context, step []plannedWrite) {
	hook := a.cfg.Hooks.BeforeWrite
	switch {
	case hook == nil:
	case len(step) == 1:
		hook(ctx, step[0].w)
	default:
		var wg sync.WaitGroup
		for _, pw := range step {
			wg.Go(func() { hook(ctx, pw.w) })
		}
		wg.Wait()
	}
}

// readAhead reads the keys of writes with multi-key gets; it returns nil,
// and each step then reads its own keys, when the read fails.
func (a *applier) readAhead(ctx context.Context, writes []plannedWrite) *memfence.Snapshot {
	keys := make([]string, len(writes))
	for i, pw := range writes {
		keys[i] = pw.w.Op.Key
	}
	snap, err := a.cfg.Memcached.Read(ctx, keys)
	if err != nil {
		if a.cfg.Hooks.MemcachedError != nil {
			a.cfg.Hooks.MemcachedError(err)
		}
		return nil
	}
	return snap
}

// reasons groups rejections by item, keeping their order. A batch's
// operations are all in one lane group, so they arrive in the batch's order.
func reasons(rej []rejection) map[int][]string {
	if len(rej) == 0 {
		return nil
	}
	m := make(map[int][]string)
	for _, r := range rej {
		m[r.item] = append(m[r.item], r.reason)
	}
	return m
}

// schedule splits writes into steps. Each step holds the next write of at
// most n lane groups (at least one): those whose next write comes first
// among writes, so that with n = 1 the steps are the writes in their order.
// A group's writes are in its steps in their order among writes.
func schedule(writes []plannedWrite, n int) [][]plannedWrite {
	n = max(n, 1)
	idx := make(map[string]int)
	var queues [][]int // positions in writes, by group
	for i, pw := range writes {
		j, ok := idx[pw.group]
		if !ok {
			j = len(queues)
			idx[pw.group] = j
			queues = append(queues, nil)
		}
		queues[j] = append(queues[j], i)
	}
	var steps [][]plannedWrite
	for len(queues) > 0 {
		if len(queues) > n {
			slices.SortFunc(queues, func(x, y []int) int { return cmp.Compare(x[0], y[0]) })
		}
		step := make([]plannedWrite, min(n, len(queues)))
		for k := range step {
			step[k] = writes[queues[k][0]]
			queues[k] = queues[k][1:]
		}
		steps = append(steps, step)
		queues = slices.DeleteFunc(queues, func(q []int) bool { return len(q) == 0 })
	}
	return steps
}

// laneGroups maps every name of items to its lane group: names whose
// operations in items share a key (written or skipped) are in one group.
//
// A name's operation skipped in favour of another name's newer operation on
// the same key is applied only when that newer write is made; if the two
// names' writes went out together, a reader could see a later write of the
// first name before the key shows anything at least as new as its skipped
// one. In one group, writes are made one step after another in token order,
// so that cannot happen.
func laneGroups(items []pending) map[string]string {
	parent := make(map[string]string)
	var find func(string) string
	find = func(n string) string {
		p, ok := parent[n]
		if !ok || p == n {
			parent[n] = n
			return n
		}
		root := find(p)
		parent[n] = root
		return root
	}
	owner := make(map[string]string) // key -> a name that touched it
	for _, it := range items {
		if it.batch == nil {
			continue
		}
		name := it.batch.Name
		find(name)
		for _, o := range it.batch.Ops {
			other, ok := owner[o.Key]
			if !ok {
				owner[o.Key] = name
				continue
			}
			if a, b := find(name), find(other); a != b {
				parent[a] = b
			}
		}
	}
	groups := make(map[string]string, len(parent))
	for n := range parent {
		groups[n] = find(n)
	}
	return groups
}
