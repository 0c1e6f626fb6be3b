package apiserver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// limited reports whether err is a RESOURCE_EXHAUSTED refusal with a
// retry hint, and the hint.
func limited(t *testing.T, err error) time.Duration {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || apierr.ReasonOf(err) != apierr.ReasonExhausted || !errors.Is(apierr.FromStatus(err), apierr.ErrExhausted) {
		t.Fatalf("refusal %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("refusal %v has no RetryInfo", err)
	return 0
}

func TestLimiterRefusesPastEachLimit(t *testing.T) {
	cfg := (&Config{RegisterRate: 1, RegisterBurst: 2, CallRate: 1, CallBurst: 5, MaxConcurrentCalls: 3, MaxStreams: 2, MaxRegistrations: 2}).withDefaults()
	st := cfg.Stats
	l := newLimiter(cfg, st)
	ctx := withCallerInfo(context.Background(), callerInfo{addr: "192.0.2.1:5000"})
	other := withCallerInfo(context.Background(), callerInfo{addr: "192.0.2.2:5000"})

	// Concurrent calls: three held, the fourth refused.
	var releases []func()
	for range 3 {
		r, err := l.admit(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	limited(t, func() error { _, err := l.admit(other, false); return err }())
	for _, r := range releases {
		r()
	}
	// Registrations of one identity: the burst of 2, then refused with a
	// hint; the calls' burst of 5 is then used up too.
	for range 2 {
		r, err := l.admit(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		r()
	}
	if hint := limited(t, func() error { _, err := l.admit(ctx, true); return err }()); hint <= 0 || hint > 2*time.Second {
		t.Errorf("registration retry hint %v", hint)
	}
	// Another identity has its own rates.
	r, err := l.admit(other, true)
	if err != nil {
		t.Fatalf("another identity: %v", err)
	}
	r()
	// Streams.
	d1, err := l.openStream()
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := l.openStream()
	limited(t, func() error { _, err := l.openStream(); return err }())
	d1()
	d2()
	// Registrations held: two made, the third refused; an unregistration
	// frees a place.
	for lease := int64(1); lease <= 2; lease++ {
		made, err := l.reserveRegistration()
		if err != nil {
			t.Fatal(err)
		}
		made(lease, time.Minute)
	}
	limited(t, func() error { _, err := l.reserveRegistration(); return err }())
	l.forgetRegistration(1)
	if made, err := l.reserveRegistration(); err != nil {
		t.Fatalf("after an unregistration: %v", err)
	} else {
		made(0, 0) // failed: holds no place
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(st.Collectors()...)
	want := `
# HELP coordinator_api_limited_total Caller API calls refused RESOURCE_EXHAUSTED, by the limit that refused them.
# TYPE coordinator_api_limited_total counter
coordinator_api_limited_total{limit="calls"} 1
coordinator_api_limited_total{limit="rate"} 1
coordinator_api_limited_total{limit="registrations"} 1
coordinator_api_limited_total{limit="streams"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "coordinator_api_limited_total"); err != nil {
		t.Error(err)
	}
}

func TestRegistrationsThatRanOutFreeTheirPlace(t *testing.T) {
	cfg := (&Config{MaxRegistrations: 1}).withDefaults()
	l := newLimiter(cfg, cfg.Stats)
	made, err := l.reserveRegistration()
	if err != nil {
		t.Fatal(err)
	}
	made(7, -time.Second) // its deadline has passed: ran out, or moved away
	if _, err := l.reserveRegistration(); err != nil {
		t.Fatalf("a registration past its deadline still holds its place: %v", err)
	}
}
