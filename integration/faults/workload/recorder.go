// Package workload drives a coordinator deployment the way its users do
// while faults are injected, and records a history for package checker:
// callers under several names submit sets and deletes to a small key space
// through pkg/client, restart (a new Register of the same name) in the
// middle of it, wait for their writes and drains; readers poll memcached
// directly and record what they see. Callers share clients, so that
// submissions of different names made at the same moment share etcd
// transactions (group commit) and get tokens that differ only by index.
package workload

import (
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

// Recorder collects a history. It is safe for concurrent use; times are
// taken on one monotonic clock from its creation.
type Recorder struct {
	start time.Time

	mu sync.Mutex
	h  checker.History
}

// NewRecorder starts a history.
func NewRecorder(scenario string, seed int64, keys []string) *Recorder {
	return &Recorder{start: time.Now(), h: checker.History{Scenario: scenario, Seed: seed, Keys: append([]string(nil), keys...)}}
}

// Now is the time since the recorder started, in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Call records a submission.
func (r *Recorder) Call(c checker.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Calls = append(r.h.Calls, c)
}

// Read records a get.
func (r *Recorder) Read(rd checker.Read) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Reads = append(r.h.Reads, rd)
}

// Applied records a WaitApplied that returned.
func (r *Recorder) Applied(a checker.Applied) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Applied = append(r.h.Applied, a)
}

// Registered records a Register that returned, and the drain it implies.
func (r *Recorder) Registered(reg checker.Registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Registrations = append(r.h.Registrations, reg)
	if reg.WaitDrained {
		r.h.Drains = append(r.h.Drains, checker.Drain{Name: reg.Name, Incarnation: reg.Incarnation, Start: reg.Start, End: reg.End})
	}
}

// Fault records a fault injected at the moment of the call and returns its
// index for Healed.
func (r *Recorder) Fault(kind, target, detail string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Faults = append(r.h.Faults, checker.Fault{At: r.Now(), Kind: kind, Target: target, Detail: detail})
	return len(r.h.Faults) - 1
}

// Healed records that fault i was undone at the moment of the call.
func (r *Recorder) Healed(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Faults[i].Healed = r.Now()
}

// Wipe records that a memcached server lost its items between down and
// up: the items of keys, or every item when keys is empty (the only
// server).
func (r *Recorder) Wipe(down, up int64, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Wipes = append(r.h.Wipes, checker.Wipe{Down: down, Up: up, Keys: keys})
}

// Faults is the number of faults recorded so far.
func (r *Recorder) Faults() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.h.Faults)
}

// History returns a copy of the history so far with final as its final
// state.
func (r *Recorder) History(final checker.Final) *checker.History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Calls = append([]checker.Call(nil), r.h.Calls...)
	h.Reads = append([]checker.Read(nil), r.h.Reads...)
	h.Applied = append([]checker.Applied(nil), r.h.Applied...)
	h.Drains = append([]checker.Drain(nil), r.h.Drains...)
	h.Registrations = append([]checker.Registration(nil), r.h.Registrations...)
	h.Faults = append([]checker.Fault(nil), r.h.Faults...)
	h.Wipes = append([]checker.Wipe(nil), r.h.Wipes...)
	h.Final = final
	return &h
}

// FromWall puts a Unix time in nanoseconds (a time another process took)
// on the recorder's clock.
func (r *Recorder) FromWall(unixNano int64) int64 {
	return unixNano - r.start.UnixNano()
}

// AddCallerLog records what a caller in another process printed.
func (r *Recorder) AddCallerLog(l CallerLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Registrations = append(r.h.Registrations, l.Registrations...)
	r.h.Calls = append(r.h.Calls, l.Calls...)
}
