// Package checker checks a recorded history of a fault test against the
// coordinator's guarantees (docs/guarantees.md G1-G8). It is pure: Check
// reads a History value and returns a Report; it does no I/O and keeps no
// state, so a history saved as JSON can be checked again later.
//
// A history holds what the test's callers did (every submission with its
// start, end, result and token), what its readers saw in memcached (every
// get with its start, end and result), what the test knows was applied
// (WaitApplied and drained registrations), the faults it injected, and the
// final state: memcached's items and, read back from etcd's key history,
// every batch etcd accepted, every registration change and every term.
//
// Tokens (type Token) are full tokens: a revision and the batch's index in
// the transaction that accepted it. Whatever orders operations (token
// order, watermarks, WaitApplied) compares full tokens; what is about etcd
// revisions alone (registrations, terms) compares revisions.
//
// Times are nanoseconds since the history's start on one monotonic clock.
package checker

import "slices"

// Result is the outcome of a submission as the caller saw it.
type Result string

// Results of a submission.
const (
	// OK: the submission returned a token.
	OK Result = "ok"
	// Refused: the submission was refused as superseded or expired (G1).
	Refused Result = "refused"
	// Unknown: the submission failed otherwise (timeout, etcd unavailable);
	// it may or may not have been accepted.
	Unknown Result = "unknown"
)

// Operation kinds.
const (
	KindSet    = "set"
	KindDelete = "delete"
)

// Op is one operation of a submitted batch.
type Op struct {
	// Kind is KindSet or KindDelete.
	Kind string `json:"kind"`
	// Key is the memcached key.
	Key string `json:"key"`
	// Value is the value of a set. Values must be unique in a history: a
	// value read back names the operation that wrote it.
	Value string `json:"value,omitempty"`
}

// Call is one submission of a batch by a caller.
type Call struct {
	// ID is the batch id, unique in the history.
	ID string `json:"id"`
	// Name and Incarnation identify the submitting incarnation.
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	// Ops is the batch, applied in this order.
	Ops []Op `json:"ops"`
	// Start and End bound the call.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Result is the outcome and Err the error text when not OK.
	Result Result `json:"result"`
	Err    string `json:"err,omitempty"`
	// Token is the returned token when Result is OK.
	Token Token `json:"token,omitzero"`
}

// Read is one get of a key from memcached by a reader.
type Read struct {
	// Reader names the reader; a reader's gets do not overlap.
	Reader string `json:"reader"`
	Key    string `json:"key"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	// Found is false for a miss.
	Found bool   `json:"found"`
	Value string `json:"value,omitempty"`
	// Term is the item's flags: the leadership term it was written under.
	Term uint32 `json:"term,omitempty"`
}

// Applied records a WaitApplied call that returned: at End the applied
// watermark had reached Token (G8).
type Applied struct {
	Token Token `json:"token"`
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Watermark, when not zero, is the applied watermark as etcd held it
	// in a linearizable read made right after the call returned: at least
	// Token, since a watermark never goes back. A wait released early is
	// seen here only until the leader's next commit, so the read comes
	// first, before anything else the caller does.
	Watermark Token `json:"watermark,omitzero"`
}

// Drain records a registration with WaitDrained that returned: at End every
// accepted operation of the earlier incarnations of Name had been applied
// (G7).
type Drain struct {
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	Start       int64  `json:"start"`
	End         int64  `json:"end"`
}

// Registration records a successful Register (informational).
type Registration struct {
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	Start       int64  `json:"start"`
	End         int64  `json:"end"`
	WaitDrained bool   `json:"wait_drained,omitempty"`
}

// Fault is one injected fault.
type Fault struct {
	// At is when it was injected and Healed when it was undone (zero if it
	// needs no undoing, as a kill followed by a separate restart).
	At     int64  `json:"at"`
	Healed int64  `json:"healed,omitempty"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	Detail string `json:"detail,omitempty"`
}

// Wipe records a memcached server losing every item: it went down at Down
// and was serving again, empty, at Up. Keys, when set, are the keys that
// server held (one server of a pool); none means every key (the only
// server).
type Wipe struct {
	Down int64    `json:"down"`
	Up   int64    `json:"up"`
	Keys []string `json:"keys,omitempty"`
}

// covers reports whether the wipe lost key.
func (w Wipe) covers(key string) bool {
	return len(w.Keys) == 0 || slices.Contains(w.Keys, key)
}

// Accepted is a batch etcd accepted, read from its key history: Token is
// the revision of the put and the index the stored record carries.
type Accepted struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	Token       Token  `json:"token"`
	Ops         []Op   `json:"ops"`
}

// RegEvent is a change of a registration key in etcd: a put is a new
// incarnation (Rev is its incarnation token), a delete the end of one
// (lease expired or revoked).
type RegEvent struct {
	Name    string `json:"name"`
	Rev     int64  `json:"rev"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Item is a key's final state in memcached.
type Item struct {
	Found bool   `json:"found"`
	Value string `json:"value,omitempty"`
	Term  uint32 `json:"term,omitempty"`
}

// Final is the state after the workload stopped, faults were healed and
// the leader drained every pending batch.
type Final struct {
	// Memcached maps every key of the history to its final item.
	Memcached map[string]Item `json:"memcached"`
	// Watermark is the final applied watermark.
	Watermark Token `json:"watermark"`
	// Pending counts batches still stored (not applied) at the end.
	Pending int `json:"pending"`
	// EtcdHistory tells whether Accepted, Registrations and Terms were read
	// from etcd. Without it, unknown submissions stay unknown.
	EtcdHistory bool `json:"etcd_history"`
	// Accepted is every batch etcd accepted, in token order.
	Accepted []Accepted `json:"accepted,omitempty"`
	// Registrations is every registration change, in revision order.
	Registrations []RegEvent `json:"registrations,omitempty"`
	// Terms are the revisions at which leadership terms were taken.
	Terms []int64 `json:"terms,omitempty"`
	// Watermarks are the successive watermark values written to etcd.
	Watermarks []Token `json:"watermarks,omitempty"`
}

// History is everything a fault test recorded.
type History struct {
	Scenario      string         `json:"scenario"`
	Seed          int64          `json:"seed,omitempty"`
	Keys          []string       `json:"keys"`
	Calls         []Call         `json:"calls"`
	Reads         []Read         `json:"reads"`
	Applied       []Applied      `json:"applied,omitempty"`
	Drains        []Drain        `json:"drains,omitempty"`
	Registrations []Registration `json:"registrations,omitempty"`
	Faults        []Fault        `json:"faults,omitempty"`
	Wipes         []Wipe         `json:"wipes,omitempty"`
	// Soak is what a soak run sampled of every process once a minute (see
	// RuleLeak).
	Soak []Sample `json:"soak,omitempty"`
	// StepWrites is the most writes a leader makes in one step (the nodes'
	// --write-concurrency), which bounds the keys a former leader can
	// recreate after a newer one deleted them (RuleWindows); zero means
	// DefaultStepWrites.
	StepWrites int `json:"step_writes,omitempty"`
	// ReadBacks are the leaders' read-back judgements, from the nodes'
	// logs (RuleReadBack).
	ReadBacks []ReadBack `json:"read_backs,omitempty"`
	Final     Final      `json:"final"`
}

// DefaultStepWrites is the nodes' default --write-concurrency
// (applier.DefaultWriteConcurrency).
const DefaultStepWrites = 8
