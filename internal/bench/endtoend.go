package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Measurement names of the end-to-end scenario.
const (
	whatApplied   = "coordinator submit→applied (caller waits)"
	whatSaturated = "coordinator applied, callers not waiting"
)

// endToEndConcurrency are the concurrency levels of the end-to-end scenario.
var endToEndConcurrency = []int{endToEndConc16, endToEndConc64}

// runEndToEnd measures operations per second from submission to memcached
// and the submit→applied latency, next to raw etcd puts. Two ways: every
// caller waits until its operation is applied before it submits the next
// (the latency the p99 target reads), and callers that submit without
// waiting (the sustained throughput the throughput target reads: the
// applier never runs dry; latency then grows with the length of the run,
// as a queue's does). With Config.Repeat above 1, the three run that many
// times, in reverse order every other time.
func (r *runner) runEndToEnd(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioEndToEnd}
	if err := r.StartNode(ctx); err != nil {
		return sr, err
	}
	if err := r.Probe(ctx); err != nil {
		return sr, err
	}
	for _, conc := range endToEndConcurrency {
		c := newComparison()
		var notes []string
		err := r.compare(sr, c, c.measured(func() (Measurement, error) {
			return r.measure(ctx, whatEtcdPut, conc, r.EtcdPut), nil
		}), c.measured(func() (Measurement, error) {
			return r.endToEndWaiting(ctx, conc)
		}), c.measured(func() (Measurement, error) {
			sat, note, err := r.endToEndSaturated(ctx, conc)
			notes = append(notes, note)
			return sat, err
		}))
		if err != nil {
			return sr, err
		}
		sr.Measurements = append(sr.Measurements, c.median(whatApplied), c.median(whatSaturated), c.median(whatEtcdPut))
		for i, note := range notes {
			sr.notef("c=%d, callers not waiting%s: %s", conc, r.runLabel(i), note)
		}
		sr.addRatio(ratioE2EPut, conc, c.ratio(whatApplied, whatEtcdPut, opsPerSec))
		sr.addRatio(ratioE2EP99, conc, c.ratio(whatApplied, whatEtcdPut, p99Ms))
		sr.addRatio(ratioE2ESaturatedPut, conc, c.ratio(whatSaturated, whatEtcdPut, opsPerSec))
	}
	return sr, nil
}

// endToEndWaiting runs conc closed-loop callers that each submit one
// operation and wait until the applied watermark covers its token before
// they submit the next. One watch on the watermark serves them all (as
// Client.WaitApplied shares one); an operation's latency runs
// from the start of its submission to the watermark event covering it. A
// node must be running.
func (r *runner) endToEndWaiting(ctx context.Context, conc int) (Measurement, error) {
	w, err := watchWatermark(ctx, r.Etcd, r.Layout)
	if err != nil {
		return Measurement{}, err
	}
	defer w.stop()
	before := r.NodeStats()
	timeout := max(time.Minute, 10*r.cfg.Duration)
	res := closedLoop(ctx, conc, r.cfg.Duration, func(ctx context.Context, wk, i int) error {
		tok, err := r.Caller(wk).Set(ctx, r.Key("k", wk, i), r.Value, 0)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err = w.wait(wctx, tok)
		return err
	})
	m := measurement(whatApplied, conc, res)
	m.Note = joinNote(m.Note, r.NodeStats().Sub(before).String())
	r.progressMeasurement(m)
	return m, nil
}

// submission is one accepted submission: its token and when the submission
// was sent.
type submission struct {
	tok client.Token
	at  time.Time
}

// endToEndSaturated submits in conc closed-loop workers that do not wait
// for their operations to be applied, for the configured duration, then
// waits until everything submitted is applied. A watch on the applied
// watermark records when each token became applied; the throughput is the
// operations submitted divided by the time from the first submission to the
// last one applied. A node must be running.
func (r *runner) endToEndSaturated(ctx context.Context, conc int) (Measurement, string, error) {
	w, err := watchWatermark(ctx, r.Etcd, r.Layout)
	if err != nil {
		return Measurement{}, "", err
	}
	defer w.stop()
	before := r.NodeStats()
	subs := make([][]submission, conc)
	start := time.Now()
	res := closedLoop(ctx, conc, r.cfg.Duration, func(ctx context.Context, wk, i int) error {
		t0 := time.Now()
		tok, err := r.Caller(wk).Set(ctx, r.Key("k", wk, i), r.Value, 0)
		if err != nil {
			return err
		}
		subs[wk] = append(subs[wk], submission{tok: tok, at: t0})
		return nil
	})
	submitted := time.Now()
	var last client.Token
	n := 0
	for _, s := range subs {
		for _, x := range s {
			last = tokenseq.Max(last, x.tok)
			n++
		}
	}
	m := Measurement{What: whatSaturated, Concurrency: conc, Errors: res.errors}
	if res.firstErr != nil {
		m.Note = "first error: " + res.firstErr.Error()
	}
	if n == 0 {
		return m, "", fmt.Errorf("end-to-end at concurrency %d: no submission accepted (%s)", conc, m.Note)
	}
	wctx, cancel := context.WithTimeout(ctx, max(2*time.Minute, 20*r.cfg.Duration))
	defer cancel()
	done, err := w.wait(wctx, last)
	if err != nil {
		return m, "", err
	}
	lat := make([]time.Duration, 0, n)
	for _, s := range subs {
		for _, x := range s {
			t, ok := w.reached(x.tok)
			if !ok {
				return m, "", fmt.Errorf("token %s applied but not recorded", x.tok)
			}
			lat = append(lat, max(0, t.Sub(x.at)))
		}
	}
	s := summarize(lat)
	elapsed := done.Sub(start)
	m.Ops, m.Seconds, m.OpsPerSec = int64(n), elapsed.Seconds(), float64(n)/elapsed.Seconds()
	m.P50Ms, m.P99Ms, m.MaxMs = ms(s.p50), ms(s.p99), ms(s.max)
	r.progressMeasurement(m)
	note := fmt.Sprintf("submitted %.0f ops/s for %.1fs; the last was applied %.2fs after submissions stopped "+
		"(its latencies are queueing time); %s",
		res.opsPerSec(), res.elapsed.Seconds(), max(0, done.Sub(submitted).Seconds()), r.NodeStats().Sub(before))
	return m, note, nil
}

// joinNote joins two parts of a note, either of which may be empty.
func joinNote(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "; " + b
}
