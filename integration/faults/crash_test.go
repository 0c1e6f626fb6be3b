package faults

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/cluster"
	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/integration/faults/workload"
	"github.com/coordinator-dev/coordinator/integration/harness"
)

// TestCallerKill9 runs a caller in its own process (integration/cmd/crashcaller)
// beside the workload and kills it with SIGKILL while it submits: nothing
// closes its incarnation, its lease runs out, and every operation etcd
// accepted from it must still be applied (G4) in token order with the
// others. What it printed goes into the history; the submission it had
// in flight is an unknown outcome, settled by etcd's history: the test
// holds that request in a proxy and delivers it after the kill.
func TestCallerKill9(t *testing.T) {
	// The crashcaller takes no certificates.
	s := start(t, "caller-kill-9", setup{plain: true})
	bin := harness.Build(t, "github.com/coordinator-dev/coordinator/integration/cmd/crashcaller", false)
	// The caller reaches etcd through a proxy, so that the test can hold
	// its last submission in flight when it kills it.
	link, err := proxy.New("127.0.0.1:0", s.c.Members[1].ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	const name = "cx"
	p := harness.Start(t, "crashcaller", bin, "-endpoints", "http://"+link.Addr(), "-namespace", s.c.Namespace,
		"-name", name, "-keys", strings.Join(keys, ","), "-ttl", "2s", "-seed", "7", "-pause", "5ms")
	ctx, cancel := s.timeout()
	defer cancel()
	if err := cluster.Poll(ctx, 20*time.Millisecond, func() bool {
		return strings.Count(p.Output(), `"result":"ok"`) >= 20 || !cluster.Running(p)
	}); err != nil || !cluster.Running(p) {
		s.fatalf("crashcaller never had 20 submissions acknowledged (%v):\n%s", err, p.Output())
	}
	// Hold its link until a submission is in flight (its last line a
	// call), kill it, then let the held request go: it reaches etcd after
	// the caller died, while its lease still runs.
	link.Blackhole()
	if err := cluster.Poll(ctx, 5*time.Millisecond, func() bool {
		out := strings.TrimSpace(p.Output())
		return link.Held() > 0 && strings.Contains(out[strings.LastIndex(out, "\n")+1:], `"event":"call"`)
	}); err != nil {
		s.fatalf("crashcaller had no submission in flight: %v\n%s", err, p.Output())
	}
	i := s.fault("kill -9", "caller "+name, "separate process, lease left to expire")
	p.Kill()
	killed := s.rec.Now()
	link.Heal()
	s.healed(i)
	log, err := workload.ParseCallerLog(p.Output(), s.rec.FromWall, killed)
	if err != nil {
		s.fatalf("%v", err)
	}
	if len(log.Registrations) != 1 {
		s.fatalf("crashcaller printed %d registrations:\n%s", len(log.Registrations), p.Output())
	}
	s.rec.AddCallerLog(log)
	// Nothing revokes the killed caller's lease: its registration ends when
	// the lease runs out.
	regKey := s.c.Layout.Reg(name)
	if err := cluster.Poll(ctx, 50*time.Millisecond, func() bool {
		r, err := s.c.Client.Get(ctx, regKey)
		return err == nil && len(r.Kvs) == 0
	}); err != nil {
		s.fatalf("%s's registration never expired after the kill: %v", name, err)
	}
	s.progress(30)
	rep := s.finish()
	var ok int
	for _, c := range log.Calls {
		if c.Result == checker.OK {
			ok++
		}
	}
	s.t.Logf("crashcaller: %d calls, %d acknowledged, %d in flight at the kill", len(log.Calls), ok, log.Unprinted)
	if rep.Stats.Calls < len(log.Calls) {
		t.Errorf("the history holds %d calls, fewer than the crashcaller's %d", rep.Stats.Calls, len(log.Calls))
	}
}

// TestParseCallerLog reads a log cut by a kill: an outcome never printed is
// unknown, ending at the kill; a line cut short and stderr are skipped.
func TestParseCallerLog(t *testing.T) {
	enc := func(l workload.CallerLine) string {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	out := strings.Join([]string{
		enc(workload.CallerLine{Event: "registered", Name: "cx", Incarnation: 9, Start: 1000, End: 1100}),
		"some stderr line",
		enc(workload.CallerLine{Event: "call", Name: "cx", Incarnation: 9, ID: "cx.1.1", Ops: []checker.Op{{Kind: "set", Key: "k", Value: "cx.1.1.0"}}, Start: 1200}),
		enc(workload.CallerLine{Event: "result", ID: "cx.1.1", End: 1300, Result: checker.OK, Token: checker.Token{Revision: 12}}),
		enc(workload.CallerLine{Event: "call", Name: "cx", Incarnation: 9, ID: "cx.1.2", Ops: []checker.Op{{Kind: "delete", Key: "k"}}, Start: 1400}),
		`{"event":"res`,
	}, "\n")
	log, err := workload.ParseCallerLog(out, func(ns int64) int64 { return ns - 1000 }, 900)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Registrations) != 1 || log.Registrations[0].Start != 0 || log.Registrations[0].Incarnation != 9 {
		t.Fatalf("registrations %+v", log.Registrations)
	}
	if len(log.Calls) != 2 || log.Unprinted != 1 {
		t.Fatalf("calls %+v, unprinted %d", log.Calls, log.Unprinted)
	}
	if c := log.Calls[0]; c.Result != checker.OK || c.Token.Revision != 12 || c.Start != 200 || c.End != 300 {
		t.Fatalf("first call %+v", c)
	}
	if c := log.Calls[1]; c.Result != checker.Unknown || c.End != 900 {
		t.Fatalf("call in flight at the kill %+v", c)
	}
}
