package verify

import (
	"fmt"
	"time"
)

// Progress is how far Run has come.
type Progress struct {
	// Checked and Total count keys.
	Checked, Total int
	// Problems counts the keys reported other than ok, and those with
	// stray copies.
	Problems int
	// Elapsed is the time since the first key was read.
	Elapsed time.Duration
}

// KeyResult is one key's finding.
type KeyResult struct {
	// Key is the memcached key.
	Key string `json:"key"`
	// Status is what was found.
	Status Status `json:"status"`
	// Cause is why a missing key is missing.
	Cause Cause `json:"cause,omitempty"`
	// Server is the server the topology names for the key.
	Server string `json:"server"`
	// Strays are the other servers holding a copy: the only copies of a
	// misplaced key.
	Strays []string `json:"strays,omitempty"`
	// Term is the term of the item on Server; WantTerm the term of the
	// last applied write, 0 when the source does not say.
	Term     uint32 `json:"term,omitempty"`
	WantTerm uint32 `json:"want_term,omitempty"`
	// Detail says what differs, for a stale key.
	Detail string `json:"detail,omitempty"`
}

// problem reports whether r needs attention: anything but ok, expired
// keys aside, and any stray copy.
func (r KeyResult) problem() bool {
	return len(r.Strays) > 0 || (r.Status != StatusOK && !(r.Status == StatusMissing && r.Cause == CauseExpired))
}

// ServerInfo is one server of the topology as its stats describe it.
type ServerInfo struct {
	// Addr is the server's address.
	Addr string `json:"addr"`
	// Uptime is how long its process has run, in seconds.
	Uptime int64 `json:"uptime_seconds"`
	// Items is how many items it holds.
	Items uint64 `json:"items"`
	// Evictions counts the items it evicted since it started.
	Evictions uint64 `json:"evictions"`
}

// Report is what Run found.
type Report struct {
	// Source is where the keys came from.
	Source Source `json:"source"`
	// Topology is the topology the keys were checked against; Changing
	// is true while a change to another is under way (keys being moved
	// show as misplaced or stray until it ends).
	Topology string `json:"topology"`
	Epoch    uint64 `json:"epoch"`
	Changing bool   `json:"changing,omitempty"`
	// Servers are the topology's servers.
	Servers []ServerInfo `json:"servers"`
	// Keys counts the keys checked; the rest count them by finding.
	// Expired counts the missing keys whose cause is CauseExpired; Strays
	// the keys with a copy on another server than their own.
	Keys      int `json:"keys"`
	OK        int `json:"ok"`
	Missing   int `json:"missing"`
	Expired   int `json:"expired"`
	Stale     int `json:"stale"`
	Misplaced int `json:"misplaced"`
	Strays    int `json:"strays"`
	// Pending counts the keys SourceHistory left out because their newest
	// operation is not applied yet.
	Pending int `json:"pending,omitempty"`
	// Problems are the keys that need attention (every status but ok and
	// expired, and every key with strays), in key order, at most
	// Config.MaxProblems of them; Truncated is true when more were found.
	Problems  []KeyResult `json:"problems"`
	Truncated bool        `json:"truncated,omitempty"`
	// Seconds is how long the keys took to check, KeysPerSecond the rate.
	Seconds       float64 `json:"seconds"`
	KeysPerSecond float64 `json:"keys_per_second"`
}

// Clean reports whether every key is ok or expired and no key has a stray
// copy.
func (r *Report) Clean() bool {
	return r.Missing == r.Expired && r.Stale == 0 && r.Misplaced == 0 && r.Strays == 0
}

// Err returns nil for a clean report and an error matching
// ErrInconsistent, with the counts, otherwise.
func (r *Report) Err() error {
	if r.Clean() {
		return nil
	}
	return fmt.Errorf("%w: %d missing (%d of them expired), %d stale, %d misplaced, %d with stray copies, of %d keys",
		ErrInconsistent, r.Missing, r.Expired, r.Stale, r.Misplaced, r.Strays, r.Keys)
}

func (r *Report) add(k KeyResult, maxProblems int) {
	switch k.Status {
	case StatusOK:
		r.OK++
	case StatusMissing:
		r.Missing++
		if k.Cause == CauseExpired {
			r.Expired++
		}
	case StatusStale:
		r.Stale++
	case StatusMisplaced:
		r.Misplaced++
	}
	if len(k.Strays) > 0 && k.Status != StatusMisplaced {
		r.Strays++
	}
	if k.problem() {
		if len(r.Problems) < maxProblems {
			r.Problems = append(r.Problems, k)
		} else {
			r.Truncated = true
		}
	}
}
