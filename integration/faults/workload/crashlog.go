package workload

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/coordinator-dev/coordinator/integration/checker"
)

// CallerLine is one line a caller in a separate process
// (integration/cmd/crashcaller) prints on stdout as JSON: a registration,
// a submission about to be made, or its outcome. Times are Unix
// nanoseconds, so that a test can put them on its recorder's clock.
type CallerLine struct {
	// Event is "registered", "call" or "result".
	Event string `json:"event"`
	// Name and Incarnation identify the incarnation (registered, call).
	Name        string `json:"name,omitempty"`
	Incarnation int64  `json:"incarnation,omitempty"`
	// ID is the batch id (call, result).
	ID string `json:"id,omitempty"`
	// Ops is the batch (call).
	Ops []checker.Op `json:"ops,omitempty"`
	// Start and End bound the registration or the submission.
	Start int64 `json:"start,omitempty"`
	End   int64 `json:"end,omitempty"`
	// Result is the outcome (result), as checker.Result, and Err its error.
	Result checker.Result `json:"result,omitempty"`
	Err    string         `json:"err,omitempty"`
	// Token is the token of an acknowledged submission.
	Token checker.Token `json:"token,omitzero"`
}

// CallerLog is what a killed caller process printed, as history records.
type CallerLog struct {
	Registrations []checker.Registration
	// Calls are its submissions; those whose outcome it never printed
	// (the process was killed first) are unknown, ending at the kill.
	Calls []checker.Call
	// Unprinted counts the calls whose outcome was never printed.
	Unprinted int
}

// ParseCallerLog reads the JSON lines of out (other lines are skipped: the
// process's stderr shares the log), converting times with toRec (Unix
// nanoseconds to the recorder's clock); killed is the recorder time of the
// kill.
func ParseCallerLog(out string, toRec func(int64) int64, killed int64) (CallerLog, error) {
	var log CallerLog
	calls := map[string]int{}
	for _, raw := range strings.Split(out, "\n") {
		raw = strings.TrimSpace(raw)
		if !strings.HasPrefix(raw, "{") {
			continue
		}
		var l CallerLine
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			// The kill can cut the last line short.
			continue
		}
		switch l.Event {
		case "registered":
			log.Registrations = append(log.Registrations, checker.Registration{
				Name: l.Name, Incarnation: l.Incarnation, Start: toRec(l.Start), End: toRec(l.End),
			})
		case "call":
			calls[l.ID] = len(log.Calls)
			log.Calls = append(log.Calls, checker.Call{
				ID: l.ID, Name: l.Name, Incarnation: l.Incarnation, Ops: l.Ops,
				Start: toRec(l.Start), End: killed, Result: checker.Unknown, Err: "killed before it printed the outcome",
			})
		case "result":
			i, ok := calls[l.ID]
			if !ok {
				return log, fmt.Errorf("caller log: result of %s without its call", l.ID)
			}
			c := &log.Calls[i]
			c.End, c.Result, c.Err, c.Token = toRec(l.End), l.Result, l.Err, l.Token
		}
	}
	for _, c := range log.Calls {
		if c.End == killed && c.Result == checker.Unknown {
			log.Unprinted++
		}
	}
	return log, nil
}
