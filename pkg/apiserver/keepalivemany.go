package apiserver

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/regwatch"
)

// maxKeptPerResponse bounds the renewals and ends of one
// KeepAliveManyResponse; more go in the next.
const maxKeptPerResponse = 1000

// maxConcurrentAdds bounds the adds of one stream checked at once.
const maxConcurrentAdds = 32

// KeepAliveMany keeps many incarnations' leases alive on one stream; see
// the proto. It costs the node two goroutines whatever the number of
// incarnations (the call, and one reading the caller's adds and removes)
// and about a kilobyte for each: its lease is one of the node's
// leasekeeper.Keeper, its registration one subscription of the node's
// regwatch.Watcher, as for KeepAlive. An add is checked, authorized and
// limited as a KeepAlive call is; the node's registration cap bounds the
// incarnations of a stream.
func (s *Server) KeepAliveMany(stream pb.Coordinator_KeepAliveManyServer) error {
	if s.isStopping() {
		return errStoppingStream
	}
	closed, err := s.lim.openStream()
	if err != nil {
		return err
	}
	defer closed()
	ctx := stream.Context()
	k := &keptSet{s: s, ctx: ctx, identity: callerIdentity(ctx), entries: map[incKey]*keptEntry{}, wake: make(chan struct{}, 1)}
	defer k.stopAll()
	recvErr := make(chan error, 1)
	go func() { recvErr <- k.receive(stream) }()
	for {
		select {
		case <-s.stopping:
			return errStoppingStream
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				// The caller closed its side: its leases are left to
				// their TTL, as a KeepAlive stream's end leaves them.
				return nil
			}
			return err
		case <-k.wake:
			for more := true; more; {
				var resp *pb.KeepAliveManyResponse
				if resp, more = k.collect(); resp == nil {
					continue
				}
				if err := stream.Send(resp); err != nil {
					return err
				}
			}
		}
	}
}

// incKey names an incarnation.
type incKey struct {
	name string
	inc  int64
}

// keptEntry is one incarnation a KeepAliveMany stream keeps alive.
type keptEntry struct {
	key   incKey
	lease int64
	ttl   int64 // seconds, of the last renewal not yet reported
	// stopKeep and cancelWatch end the entry's renewals and watch; nil
	// until its add has made them.
	stopKeep, cancelWatch func()
	renewed               bool      // in keptSet.renewals
	check                 checkKind // in keptSet.checks unless checkNone
}

// checkKind is what a stream must read of an entry's registration.
type checkKind uint8

const (
	checkNone checkKind = iota
	// checkCurrent: the watch may have missed changes; still current?
	checkStill
	// checkEnded: the registration changed or the renewals lapsed; why?
	checkEnded
)

// keptSet is a KeepAliveMany stream's incarnations, and what it has to
// report. The Keeper's and the Watcher's funcs mark entries under mu and
// wake the stream, which reads and reports them in its own goroutine.
type keptSet struct {
	s        *Server
	ctx      context.Context
	identity string
	wake     chan struct{}

	mu       sync.Mutex
	closed   bool
	entries  map[incKey]*keptEntry
	renewals []*keptEntry
	checks   []*keptEntry
	ended    []*pb.KeepAliveEnded // adds refused, to report
}

// receive reads the caller's adds and removes until the stream ends.
func (k *keptSet) receive(stream pb.Coordinator_KeepAliveManyServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, r := range req.GetRemove() {
			k.remove(incKey{r.GetName(), r.GetIncarnation()})
		}
		// A message's adds are checked concurrently: each reads its
		// registration, and a caller adding thousands at once (a process
		// moving to this node) must have them renewed within their TTL.
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxConcurrentAdds)
		for _, r := range req.GetAdd() {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := k.add(r); err != nil {
					k.report(&pb.KeepAliveEnded{Name: r.GetName(), Incarnation: r.GetIncarnation(), Error: errorStatus(err)})
				}
			})
		}
		wg.Wait()
	}
}

// add starts keeping r's incarnation alive, as KeepAlive does: checked,
// subscribed to its registration's changes before it is read, then its
// lease kept.
func (k *keptSet) add(r *pb.KeepAliveRequest) error {
	s, key, lease := k.s, incKey{r.GetName(), r.GetIncarnation()}, r.GetLeaseId()
	if err := s.checkArgs(k.ctx, key.name, key.inc, lease); err != nil {
		return err
	}
	release, err := s.lim.admitAs(k.identity, false)
	if err != nil {
		return err
	}
	defer release()
	e := &keptEntry{key: key, lease: lease}
	k.mu.Lock()
	switch {
	case k.closed:
		k.mu.Unlock()
		return errStoppingStream
	case k.entries[key] != nil:
		// On the stream already, and left there; a foreign lease is
		// refused as KeepAlive refuses it.
		kept := k.entries[key].lease
		k.mu.Unlock()
		if kept != lease {
			return invalid("lease_id %d is not the lease of %q incarnation %d", lease, key.name, key.inc)
		}
		return nil
	case len(k.entries) >= s.cfg.MaxRegistrations:
		k.mu.Unlock()
		s.lim.stats.TooManyRegistrations.Add(1)
		return exhausted("registrations", 5*time.Second, "the stream keeps %d incarnations alive", s.cfg.MaxRegistrations)
	}
	k.entries[key] = e
	k.mu.Unlock()

	cancelWatch, err := s.regs.SubscribeFunc(k.ctx, key.name, key.inc, func(sig regwatch.Signal) {
		if sig == regwatch.Changed {
			k.mark(e, checkEnded)
		} else {
			k.mark(e, checkStill)
		}
	})
	if err == nil {
		if err = s.checkCurrent(k.ctx, key.name, key.inc, lease); err != nil {
			cancelWatch()
		}
	} else {
		err = s.stoppingOr(toStatus(err))
	}
	if err != nil {
		k.mu.Lock()
		delete(k.entries, key)
		k.mu.Unlock()
		return err
	}
	stopKeep := s.leases.KeepFunc(clientv3.LeaseID(lease), func(ttl int64) {
		if ttl <= 0 {
			k.mark(e, checkEnded)
			return
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		e.ttl = ttl
		if !e.renewed {
			e.renewed = true
			k.renewals = append(k.renewals, e)
		}
		signal(k.wake)
	})
	k.mu.Lock()
	if k.closed || k.entries[key] != e { // stopped, or removed meanwhile
		k.mu.Unlock()
		stopKeep()
		cancelWatch()
		return nil
	}
	e.stopKeep, e.cancelWatch = stopKeep, cancelWatch
	k.mu.Unlock()
	s.lim.stats.KeptAlive.Add(1)
	return nil
}

// mark asks the stream to read e's registration; an end supersedes a
// recheck.
func (k *keptSet) mark(e *keptEntry, kind checkKind) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.check == checkNone {
		k.checks = append(k.checks, e)
	}
	e.check = max(e.check, kind)
	signal(k.wake)
}

// report queues an end to send.
func (k *keptSet) report(end *pb.KeepAliveEnded) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ended = append(k.ended, end)
	signal(k.wake)
}

// remove stops keeping key alive, without an answer.
func (k *keptSet) remove(key incKey) {
	k.mu.Lock()
	e := k.entries[key]
	delete(k.entries, key)
	k.mu.Unlock()
	if e != nil {
		k.stop(e)
	}
}

// stop ends e's renewals and watch, once its add made them. It is called
// without keptSet.mu: the Keeper and the Watcher call their funcs, which
// take it, under their own locks.
func (k *keptSet) stop(e *keptEntry) {
	if e.stopKeep != nil {
		e.stopKeep()
		e.cancelWatch()
		k.s.lim.stats.KeptAlive.Add(-1)
	}
}

// stopAll stops every entry; adds under way undo themselves.
func (k *keptSet) stopAll() {
	k.mu.Lock()
	k.closed = true
	entries := k.entries
	k.entries = nil
	k.mu.Unlock()
	for _, e := range entries {
		k.stop(e)
	}
}

// collect reads the registrations of the entries marked, and returns the
// next response to send (nil when there is nothing) and whether more is
// waiting.
func (k *keptSet) collect() (*pb.KeepAliveManyResponse, bool) {
	k.mu.Lock()
	n := min(len(k.renewals), maxKeptPerResponse)
	renewals := k.renewals[:n:n]
	k.renewals = k.renewals[n:]
	resp := &pb.KeepAliveManyResponse{Renewed: make([]*pb.KeptAlive, 0, n)}
	for _, e := range renewals {
		e.renewed = false
		resp.Renewed = append(resp.Renewed, &pb.KeptAlive{Name: e.key.name, Incarnation: e.key.inc, TtlSeconds: int32(e.ttl)})
		k.s.lim.renewedRegistration(e.lease, time.Duration(e.ttl)*time.Second)
	}
	m := min(len(k.checks), maxKeptPerResponse-n)
	checks := k.checks[:m:m]
	k.checks = k.checks[m:]
	kinds := make([]checkKind, m)
	for i, e := range checks {
		kinds[i], e.check = e.check, checkNone
	}
	resp.Ended, k.ended = k.ended, nil
	more := len(k.renewals) > 0 || len(k.checks) > 0
	k.mu.Unlock()

	for i, e := range checks {
		var err error
		if kinds[i] == checkEnded {
			err = k.s.ended(k.ctx, e.key.name, e.key.inc)
		} else {
			err = k.s.checkCurrent(k.ctx, e.key.name, e.key.inc, e.lease)
		}
		if err == nil {
			continue
		}
		k.mu.Lock()
		current := k.entries[e.key] == e
		if current {
			delete(k.entries, e.key)
		}
		k.mu.Unlock()
		if current {
			k.stop(e)
			resp.Ended = append(resp.Ended, &pb.KeepAliveEnded{Name: e.key.name, Incarnation: e.key.inc, Error: errorStatus(k.s.stoppingOr(err))})
		}
	}
	if len(resp.Renewed) == 0 && len(resp.Ended) == 0 {
		return nil, more
	}
	return resp, more
}

// signal wakes a goroutine waiting on ch, unless it is woken already.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
