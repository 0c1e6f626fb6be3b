// Package capacity is the capacity model of docs/scale.md: what one
// deployment (one namespace: one etcd cluster, one leader) carries, worked
// out from a few measured inputs, and the measured figures of
// BENCHMARKS.md it reproduces.
//
// The model has four parts:
//
//   - Accepting. A submitter (a node's API, or one pkg/client process)
//     sends group transactions, at most MaxInFlight at once; each is one
//     etcd proposal, committed in a raft round (a WAL write and its
//     fdatasync, the round trips, then the apply). With c callers each
//     waiting for its answer, the two transactions in flight carry about
//     c/2 submissions each, up to MaxGroup, and a round carries one of
//     them: submissions/s = rounds/s × group size, where a round takes
//     RoundBase + group size × PerSubmission.
//   - Keep-alives. etcd's Go client renews a lease a third of its TTL
//     after the last renewal, checking every KeepAliveTick: one request
//     per registration every TTL/3 + KeepAliveTick/2 on average (a
//     process for its sessions); a node renews its API callers' leases a
//     third of the TTL after each answer, on a timer: one every TTL/3.
//   - Applying. The leader writes a round's operations in steps of up to
//     WriteConcurrency names, one pipeline per memcached server; a step
//     takes StepBase + PerWrite × its writes.
//   - The backlog. The leader holds at most its inbox, so its memory does
//     not follow the backlog; etcd's time to serve a watch that starts in
//     the past does: each response of at most WatchResponse revisions
//     costs a read of the history from the watch's revision to the head,
//     so a backlog of B operations drains in B/DrainRate +
//     B²/(2 × WatchResponse × HistoryReadRate) seconds.
//
// On one machine the accept and apply paths share the cores: an operation
// then costs the time of both (Colocated); on machines of their own, the
// slower path sets the rate (Separate).
package capacity

import (
	"math"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Model is the capacity model's inputs. Fit fills it from measured points;
// Scale moves it to other hardware.
type Model struct {
	// RoundBase is an etcd raft round carrying one small proposal, as the
	// waiting caller sees it: the WAL write and fdatasync, the round trips
	// (caller to etcd, and etcd's leader to a quorum of its members), and
	// the fixed CPU of a request.
	RoundBase time.Duration
	// PerSubmission is how much longer a round is for each submission its
	// group transaction carries: marshalling, etcd's apply of a compare and
	// a put, the answer.
	PerSubmission time.Duration
	// MaxGroup is the most batches one group transaction carries, and
	// MaxInFlight the transactions a submitter keeps in flight.
	MaxGroup, MaxInFlight int
	// StepBase and PerWrite make the time of one of the leader's write
	// steps: StepBase + PerWrite × the step's writes.
	StepBase, PerWrite time.Duration
	// WriteConcurrency is the most names one step writes (serve
	// --write-concurrency).
	WriteConcurrency int
	// KeepAliveTick is how often etcd's Go client looks for leases to
	// renew (500 ms).
	KeepAliveTick time.Duration
	// DrainRate is the leader's applied rate on a backlog whose history
	// etcd serves at once, operations/s; HistoryReadRate is how many
	// revisions of its history etcd reads per second to serve a watch
	// from the past, and WatchResponse the revisions of one response.
	DrainRate, HistoryReadRate float64
	WatchResponse              int
}

// Defaults of the parts of a Model that are the code's settings, not
// measurements.
const (
	// KeepAliveTick is etcd's Go client's check for leases to renew
	// (clientv3's retryConnWait).
	KeepAliveTick = 500 * time.Millisecond
	// WatchResponse is the revisions etcd sends in one watch response
	// when the watch starts in the past.
	WatchResponse = 1000
)

// GroupSize is the submissions one group transaction carries with callers
// callers each waiting for its answer: the MaxInFlight transactions split
// them, up to MaxGroup each, at least one.
func (m Model) GroupSize(callers int) float64 {
	g := float64(callers) / float64(m.MaxInFlight)
	return math.Max(1, math.Min(g, float64(m.MaxGroup)))
}

// Round is the time of a raft round carrying a group of g submissions.
func (m Model) Round(g float64) time.Duration {
	return m.RoundBase + time.Duration(g*float64(m.PerSubmission))
}

// SubmitRate is the submissions/s of one submitter with callers callers
// each waiting for its answer: rounds/s × group size.
func (m Model) SubmitRate(callers int) float64 {
	g := m.GroupSize(callers)
	return g / m.Round(g).Seconds()
}

// RoundsPerSecond is the raft rounds/s one submitter's groups take with
// callers waiting callers.
func (m Model) RoundsPerSecond(callers int) float64 {
	return 1 / m.Round(m.GroupSize(callers)).Seconds()
}

// ApplyRate is the leader's applied operations/s when the round's writes
// belong to names names (a step writes at most one per name and at most
// WriteConcurrency).
func (m Model) ApplyRate(names int) float64 {
	w := float64(max(1, min(names, m.WriteConcurrency)))
	return w / (m.StepBase + time.Duration(w*float64(m.PerWrite))).Seconds()
}

// KeepAlives is the lease keep-alive requests/s etcd receives for
// registrations registrations of lease TTL ttl kept alive by etcd's Go
// client (pkg/client sessions).
func (m Model) KeepAlives(registrations int, ttl time.Duration) float64 {
	return float64(registrations) / (ttl/3 + m.KeepAliveTick/2).Seconds()
}

// NodeKeepAlives is the lease keep-alive requests/s etcd receives for
// registrations registrations of lease TTL ttl kept alive through a
// node's API: the node's lease keeper sends a lease's next request a third
// of its TTL after its answer, on a timer rather than a tick.
func (m Model) NodeKeepAlives(registrations int, ttl time.Duration) float64 {
	return float64(registrations) / (ttl / 3).Seconds()
}

// DrainSeconds is how long a new leader takes to apply a backlog of
// backlog operations.
func (m Model) DrainSeconds(backlog int) float64 {
	b := float64(backlog)
	return b/m.DrainRate + b*b/(2*float64(m.WatchResponse)*m.HistoryReadRate)
}

// Colocated is the end-to-end rate when accepting (at rate submit) and
// applying (at rate apply) share one machine's cores: each operation
// costs the time of both.
func Colocated(submit, apply float64) float64 { return 1 / (1/submit + 1/apply) }

// Separate is the end-to-end rate when accepting and applying run on
// machines of their own: the slower sets it.
func Separate(submit, apply float64) float64 { return math.Min(submit, apply) }

// Points are the measured points a Model is fitted to.
type Points struct {
	// OneCaller is the submissions/s of one caller waiting for each
	// answer.
	OneCaller float64
	// GroupedRate and GroupedRounds are submissions/s and etcd's raft
	// rounds/s (proposals committed) measured together with many callers.
	GroupedRate, GroupedRounds float64
	// WriteOne and WriteMany are the leader's applied rates with steps of
	// one write and of Many writes.
	WriteOne, WriteMany float64
	Many                int
	// Backlog and BigBacklog are two backlogs and DrainRate and
	// BigDrainRate the rates at which a new leader applied them.
	Backlog, BigBacklog     int
	DrainRate, BigDrainRate float64
}

// Fit makes the Model that goes through p, with the code's defaults for
// the rest.
func Fit(p Points) Model {
	m := Model{
		MaxGroup: tokenseq.DefaultMaxGroupBatches, MaxInFlight: tokenseq.DefaultMaxInFlight,
		WriteConcurrency: applier.DefaultWriteConcurrency, KeepAliveTick: KeepAliveTick, WatchResponse: WatchResponse,
	}
	// One caller: a round of one, RoundBase + PerSubmission. Many: a round
	// of GroupedRate/GroupedRounds submissions.
	one := 1 / p.OneCaller
	g := p.GroupedRate / p.GroupedRounds
	perSub := (1/p.GroupedRounds - one) / (g - 1)
	m.PerSubmission = seconds(perSub)
	m.RoundBase = seconds(one - perSub)
	// A step of one write and a step of Many.
	t1, tn := 1/p.WriteOne, float64(p.Many)/p.WriteMany
	perWrite := (tn - t1) / float64(p.Many-1)
	m.PerWrite = seconds(perWrite)
	m.StepBase = seconds(t1 - perWrite)
	// T(B) = B/D + k B² through both backlogs, k = 1/(2 W H).
	b1, b2 := float64(p.Backlog), float64(p.BigBacklog)
	t1b, t2b := b1/p.DrainRate, b2/p.BigDrainRate
	k := (t2b/b2 - t1b/b1) / (b2 - b1)
	m.DrainRate = 1 / (t1b/b1 - k*b1)
	m.HistoryReadRate = 1 / (2 * float64(m.WatchResponse) * k)
	return m
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Hardware describes where a deployment runs, for Scale.
type Hardware struct {
	// Fsync is the latency of etcd's WAL fdatasync.
	Fsync time.Duration
	// ClientRTT is the round trip from a submitter (a node) to etcd,
	// PeerRTT between etcd's members (zero for a single member), and
	// MemcachedRTT from the leader to its memcached servers.
	ClientRTT, PeerRTT, MemcachedRTT time.Duration
	// CPUSpeed is how much faster than the measured machine the CPU work
	// of a submission and of a write goes on the machines of etcd and of
	// the leader (2 with twice the cores free for it, say); zero means 1.
	CPUSpeed float64
}

// Scale returns the model moved from the measured machine, whose round
// trips and fsync were measured, to hw: RoundBase takes hw's fsync and
// round trips in place of the measured ones, and StepBase hw's memcached
// round trip (the rest of each, CPU, divided by CPUSpeed), and the CPU
// terms are divided by CPUSpeed.
func (m Model) Scale(measured, hw Hardware) Model {
	speed := hw.CPUSpeed
	if speed == 0 {
		speed = 1
	}
	fixed := max(0, m.RoundBase-measured.Fsync-measured.ClientRTT-measured.PeerRTT)
	out := m
	out.RoundBase = hw.Fsync + hw.ClientRTT + hw.PeerRTT + time.Duration(float64(fixed)/speed)
	out.PerSubmission = time.Duration(float64(m.PerSubmission) / speed)
	out.PerWrite = time.Duration(float64(m.PerWrite) / speed)
	stepFixed := max(0, m.StepBase-measured.MemcachedRTT)
	out.StepBase = hw.MemcachedRTT + time.Duration(float64(stepFixed)/speed)
	out.DrainRate = m.DrainRate * speed
	out.HistoryReadRate = m.HistoryReadRate * speed
	return out
}

// Ceiling is where one deployment tops out.
type Ceiling struct {
	// Submit is one submitter's most submissions/s (full groups), and
	// SubmitCallers the callers waiting at once it takes to fill them.
	Submit        float64
	SubmitCallers int
	// ManySubmitters is the most submissions/s etcd takes from many
	// submitters (several nodes, or many pkg/client processes), whose
	// groups share its rounds: 1/PerSubmission.
	ManySubmitters float64
	// Apply is the leader's most applied operations/s.
	Apply float64
	// EndToEnd is the sustained rate with etcd and the leader on machines
	// of their own and enough submitters: the slower of ManySubmitters and
	// Apply.
	EndToEnd float64
	// KeepAlivesPer1000 are the keep-alive requests/s of 1,000
	// registrations of TTL KeepAliveTTL.
	KeepAlivesPer1000 float64
	KeepAliveTTL      time.Duration
}

// Ceiling works out where m tops out, keep-alives at lease TTL ttl.
func (m Model) Ceiling(ttl time.Duration) Ceiling {
	callers := m.MaxGroup * m.MaxInFlight
	c := Ceiling{
		Submit: m.SubmitRate(callers), SubmitCallers: callers,
		ManySubmitters: 1 / m.PerSubmission.Seconds(), Apply: m.ApplyRate(m.WriteConcurrency),
		KeepAlivesPer1000: m.KeepAlives(1000, ttl), KeepAliveTTL: ttl,
	}
	c.EndToEnd = Separate(c.ManySubmitters, c.Apply)
	return c
}
