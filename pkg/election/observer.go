package election

import (
	"sync/atomic"
	"time"
)

// CampaignState is where a node stands in the election.
type CampaignState int32

// Campaign states.
const (
	// StateIdle: the node holds no session (starting, stopped, or waiting
	// to try again after an election round failed).
	StateIdle CampaignState = iota
	// StateCampaigning: the node holds a session and waits for the
	// candidates before it.
	StateCampaigning
	// StateLeading: the node leads.
	StateLeading
)

// String returns the state's name: idle, campaigning or leading.
func (s CampaignState) String() string {
	switch s {
	case StateCampaigning:
		return "campaigning"
	case StateLeading:
		return "leading"
	default:
		return "idle"
	}
}

// CampaignStates lists every state, in order.
var CampaignStates = []CampaignState{StateIdle, StateCampaigning, StateLeading}

// Observer publishes a campaigning node's election state, for metrics and
// health checks (see Config.Observer). Its fields are atomics, so reading
// them costs the election nothing; every method is safe for concurrent use.
// The zero value is ready to use.
type Observer struct {
	state    atomic.Int32
	term     atomic.Uint64
	won      atomic.Uint64
	deadline atomic.Int64 // unix nanoseconds; zero without a session
	answered atomic.Int64 // unix nanoseconds
}

// State returns the node's campaign state.
func (o *Observer) State() CampaignState { return CampaignState(o.state.Load()) }

// IsLeader reports whether the node leads.
func (o *Observer) IsLeader() bool { return o.State() == StateLeading }

// Term returns the term of the node's current leadership, or of its latest
// one when it does not lead; zero when it never led.
func (o *Observer) Term() uint64 { return o.term.Load() }

// Won returns how many leaderships the node has won.
func (o *Observer) Won() uint64 { return o.won.Load() }

// LeaseDeadline returns the local deadline of the node's session lease (see
// the package documentation): the node leads, or may take over, only
// before it. It is the zero time while the node holds no session.
func (o *Observer) LeaseDeadline() time.Time { return unixTime(o.deadline.Load()) }

// LastAnswer returns when etcd last granted or renewed the node's session
// lease (the send time of the request), the zero time if it never did.
func (o *Observer) LastAnswer() time.Time { return unixTime(o.answered.Load()) }

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// The setters below accept a nil Observer, so the election calls them
// whether or not one is configured.

func (o *Observer) setState(s CampaignState) {
	if o != nil {
		o.state.Store(int32(s))
	}
}

func (o *Observer) lead(term uint64) {
	if o != nil {
		o.term.Store(term)
		o.won.Add(1)
		o.state.Store(int32(StateLeading))
	}
}

func (o *Observer) renewed(sent time.Time, deadline int64) {
	if o != nil {
		o.answered.Store(sent.UnixNano())
		o.deadline.Store(deadline)
	}
}

func (o *Observer) sessionEnded() {
	if o != nil {
		o.deadline.Store(0)
		o.state.Store(int32(StateIdle))
	}
}
