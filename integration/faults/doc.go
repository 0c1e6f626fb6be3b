// Package faults is the fault suite: each test starts a real cluster
// (package cluster: 3 etcd member processes, 3 `coordinator serve`
// processes, memcached, and a TCP proxy on every link a node has and in
// front of every member's peer port), runs a recorded workload against it
// (package workload), injects one kind of fault or two at once — or, in
// TestRandomFaults, a seeded mix of them, up to -faults.overlap at once —
// heals everything,
// lets the leader drain, and checks the recorded history with package
// checker against the guarantees of docs/guarantees.md.
//
// Each test prints one summary line (operations, faults, violations, and
// how many acknowledged tokens had a non-zero index: the callers share one
// client, so submissions of different names share etcd transactions). A
// history with a violation is saved as JSON and its path printed; run with
// -faults.keep to save every history. The randomized run takes
// -faults.seed, -faults.duration and -faults.overlap and prints its seed so
// a failure can be replayed; with -faults.soak it samples every process's
// memory, goroutines and open files once a minute and the checker flags
// growth (rule leak). scripts/faults.sh runs long randomized runs and soaks
// by hand.
package faults
