package failover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
)

// TestPausedLeaderCannotWriteAfterResume covers G5 (one writer, fenced), G6
// (no going back) and G3 with real processes: the leader is stopped with
// SIGSTOP while callers keep submitting, stays stopped until the follower has
// been elected (seen in the election, not guessed from a sleep) and has
// applied newer values, and is then resumed. A reader polling memcached the
// whole time must never see a key's sequence number or term go back: a
// write by the resumed former leader would carry its older term and show up
// as a term going back. In the end every token is applied and every key
// holds its newest value. As in TestLeaderKilledMidStream, one stream stops
// at the pause, one keeps going, and "g" keys are set once while the leader
// is paused, so that a lost replay would show in the final state.
func TestPausedLeaderCannotWriteAfterResume(t *testing.T) {
	const ns = "pause"
	c, layout, mc, endpoints := startCluster(t, ns)
	leader, follower := startPair(t, c, layout, ns, mc.Addr, endpoints, 2*time.Second)
	term0 := observe(t, c.Etcd(), layout).Term

	ctx := testenv.Ctx(t, 2*time.Minute)
	caller, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	frozen := startStream(t, caller, "f", 2, 3)
	s := startStream(t, caller, "k", 2, 3)
	gapKeys := keyNames("g", 6)
	r := startReader(t, mc.Addr, append(append(frozen.Keys(), s.Keys()...), gapKeys...), nil)

	s.WaitMore(100, 30*time.Second)
	frozen.Stop()
	endedBefore := strings.Count(leader.Output(), "leadership ended")
	leader.Pause()
	t.Logf("paused leader %s (pid %d) after %d+%d submissions", leader.ID, leader.Pid(), frozen.Count(), s.Count())
	gap := submitGap(t, caller, "g", len(gapKeys))

	st := waitLeader(t, c.Etcd(), layout, follower.ID, 30*time.Second)
	if st.Term <= term0 {
		t.Fatalf("new leader %s has term %d, not above %d", st.Leader, st.Term, term0)
	}
	t.Logf("%s took over with term %d after %d submissions", st.Leader, st.Term, s.Count())

	// The new leader applies newer values of every key before the old one
	// wakes up.
	s.WaitMore(100, 30*time.Second)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitApplied(wctx, maxToken(s.Submissions())); err != nil {
		t.Fatalf("the new leader did not apply: %v", err)
	}
	r.Sync(10 * time.Second)

	leader.Resume()
	t.Logf("resumed %s", leader.ID)
	// Wait until the former leader has noticed it lost leadership, which is
	// after any write it was about to make.
	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(leader.Output(), "leadership ended") > endedBefore
	}, "the resumed former leader never ended its leadership")
	select {
	case <-leader.Exited():
		t.Fatalf("the former leader exited after being resumed")
	default:
	}
	if strings.Contains(leader.Output(), "write fenced") {
		t.Logf("the former leader's write after resuming was fenced")
	}
	s.WaitMore(100, 30*time.Second)
	s.Stop()
	subs := append(append(frozen.Submissions(), s.Submissions()...), gap...)
	t.Logf("%d submissions accepted", len(subs))

	if got := observe(t, c.Etcd(), layout); got.Leader != follower.ID || got.Term != st.Term {
		t.Errorf("after the resume the election shows %+v, want %s with term %d", got, follower.ID, st.Term)
	}
	checkAllApplied(t, c, mc.Addr, subs, 30*time.Second)
	r.Sync(10 * time.Second)
	r.Stop()
}
