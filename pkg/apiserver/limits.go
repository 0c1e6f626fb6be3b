package apiserver

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// Defaults of the limits of Config (see docs/api.md, "Limits").
const (
	// DefaultMaxRegistrations bounds the live registrations made through
	// one node.
	DefaultMaxRegistrations = 10_000
	// DefaultMaxConcurrentCalls bounds the calls one node serves at once,
	// KeepAlive streams not counted.
	DefaultMaxConcurrentCalls = 1024
	// DefaultMaxStreams bounds the KeepAlive and SubmitStream streams one
	// node holds open.
	DefaultMaxStreams = 10_000
	// DefaultRegisterRate is the registrations per second one caller
	// identity may make, with DefaultRegisterBurst at once.
	DefaultRegisterRate  = 20
	DefaultRegisterBurst = 100
	// DefaultCallRate is the calls per second one caller identity may make,
	// with DefaultCallBurst at once.
	DefaultCallRate  = 20_000
	DefaultCallBurst = 40_000
)

// Stats counts what the limits refused; pkg/metrics exports it. The zero
// value is ready.
type Stats struct {
	// RateLimited counts calls refused by a caller identity's rate.
	RateLimited atomic.Uint64
	// TooManyCalls counts calls refused because MaxConcurrentCalls were
	// under way.
	TooManyCalls atomic.Uint64
	// TooManyStreams counts KeepAlive and SubmitStream streams refused at
	// MaxStreams.
	TooManyStreams atomic.Uint64
	// TooManyRegistrations counts registrations refused at
	// MaxRegistrations.
	TooManyRegistrations atomic.Uint64
	// Streams is the KeepAlive and SubmitStream streams open.
	Streams atomic.Int64
	// Registrations is the live registrations made through the node.
	Registrations atomic.Int64
	// KeptAlive is the registrations whose leases the node's KeepAlive and
	// KeepAliveMany streams keep alive.
	KeptAlive atomic.Int64
}

// exhausted is the RESOURCE_EXHAUSTED refusal of a limit, with a retry
// hint: gRPC's RetryInfo detail, and Retry-After through the gateway.
func exhausted(limit string, retry time.Duration, format string, args ...any) error {
	msg := limit + ": " + fmt.Sprintf(format, args...)
	st := status.New(codes.ResourceExhausted, msg)
	meta := map[string]string{"limit": limit, "retry_after_ms": strconv.FormatInt(retry.Milliseconds(), 10)}
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: apierr.ReasonExhausted, Domain: apierr.Domain, Metadata: meta},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)},
	); err == nil {
		st = d
	}
	return st.Err()
}

// limiter holds the per-identity rates and the node-wide counts.
type limiter struct {
	cfg   Config
	stats *Stats
	calls chan struct{} // a slot per call under way

	mu    sync.Mutex
	rates map[string]*identityRates

	regMu      sync.Mutex
	regs       map[int64]time.Time // lease → when it runs out unless renewed here
	regPending int                 // registrations admitted, not yet made
}

// identityRates are one caller identity's token buckets.
type identityRates struct {
	calls, registers *rate.Limiter
	used             time.Time
}

func newLimiter(cfg Config, stats *Stats) *limiter {
	return &limiter{
		cfg: cfg, stats: stats, calls: make(chan struct{}, cfg.MaxConcurrentCalls),
		rates: make(map[string]*identityRates), regs: make(map[int64]time.Time),
	}
}

// maxIdentities bounds the per-identity buckets kept; idle ones are
// dropped first.
const maxIdentities = 100_000

// ratesOf returns the buckets of identity id.
func (l *limiter) ratesOf(id string, now time.Time) *identityRates {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.rates[id]
	if !ok {
		if len(l.rates) >= maxIdentities {
			for k, v := range l.rates {
				if now.Sub(v.used) > time.Minute {
					delete(l.rates, k)
				}
			}
		}
		r = &identityRates{
			calls:     rate.NewLimiter(rate.Limit(l.cfg.CallRate), l.cfg.CallBurst),
			registers: rate.NewLimiter(rate.Limit(l.cfg.RegisterRate), l.cfg.RegisterBurst),
		}
		l.rates[id] = r
	}
	r.used = now
	return r
}

// admit admits a call of the caller identity of ctx: within its rate (and
// its registration rate for a registration) and within the node's
// concurrent calls. release must be called when the call ends.
func (l *limiter) admit(ctx context.Context, register bool) (release func(), err error) {
	return l.admitAs(callerIdentity(ctx), register)
}

// admitAs is admit for the caller identity id.
func (l *limiter) admitAs(id string, register bool) (release func(), err error) {
	now := time.Now()
	r := l.ratesOf(id, now)
	if res := r.calls.ReserveN(now, 1); !res.OK() || res.DelayFrom(now) > 0 {
		if res.OK() {
			res.CancelAt(now)
		}
		l.stats.RateLimited.Add(1)
		return nil, exhausted("call rate", time.Second, "%s is over %v calls/s", id, l.cfg.CallRate)
	}
	if register {
		if res := r.registers.ReserveN(now, 1); !res.OK() || res.DelayFrom(now) > 0 {
			wait := time.Second
			if res.OK() {
				wait = res.DelayFrom(now)
				res.CancelAt(now)
			}
			l.stats.RateLimited.Add(1)
			return nil, exhausted("registration rate", wait, "%s is over %v registrations/s", id, l.cfg.RegisterRate)
		}
	}
	select {
	case l.calls <- struct{}{}:
		return func() { <-l.calls }, nil
	default:
		l.stats.TooManyCalls.Add(1)
		return nil, exhausted("concurrent calls", 100*time.Millisecond, "the node serves %d calls at once", l.cfg.MaxConcurrentCalls)
	}
}

// openStream admits a KeepAlive or SubmitStream stream; done must be
// called when it ends.
func (l *limiter) openStream() (done func(), err error) {
	if n := l.stats.Streams.Add(1); n > int64(l.cfg.MaxStreams) {
		l.stats.Streams.Add(-1)
		l.stats.TooManyStreams.Add(1)
		return nil, exhausted("streams", time.Second, "the node holds %d streams", l.cfg.MaxStreams)
	}
	return func() { l.stats.Streams.Add(-1) }, nil
}

// reserveRegistration admits one more live registration through the
// node; settle is called with the registration's lease and TTL once it is
// made, or with a zero lease when it failed. Registrations neither renewed
// here nor unregistered by their deadline no longer count: they ran out,
// or their caller keeps them alive through another node.
func (l *limiter) reserveRegistration() (settle func(lease int64, ttl time.Duration), err error) {
	l.regMu.Lock()
	defer l.regMu.Unlock()
	if len(l.regs)+l.regPending >= l.cfg.MaxRegistrations {
		now := time.Now()
		for lease, until := range l.regs {
			if now.After(until) {
				delete(l.regs, lease)
			}
		}
		l.stats.Registrations.Store(int64(len(l.regs)))
	}
	if len(l.regs)+l.regPending >= l.cfg.MaxRegistrations {
		l.stats.TooManyRegistrations.Add(1)
		return nil, exhausted("registrations", 5*time.Second, "the node holds %d live registrations", l.cfg.MaxRegistrations)
	}
	l.regPending++
	return func(lease int64, ttl time.Duration) {
		l.regMu.Lock()
		defer l.regMu.Unlock()
		l.regPending--
		if lease != 0 {
			l.regs[lease] = time.Now().Add(ttl)
			l.stats.Registrations.Store(int64(len(l.regs)))
		}
	}, nil
}

// renewedRegistration extends lease's deadline by ttl from now when the
// registration was made through this node, or moved to it.
func (l *limiter) renewedRegistration(lease int64, ttl time.Duration) {
	l.regMu.Lock()
	defer l.regMu.Unlock()
	l.regs[lease] = time.Now().Add(ttl)
	l.stats.Registrations.Store(int64(len(l.regs)))
}

// forgetRegistration drops lease, unregistered or found gone.
func (l *limiter) forgetRegistration(lease int64) {
	l.regMu.Lock()
	defer l.regMu.Unlock()
	delete(l.regs, lease)
	l.stats.Registrations.Store(int64(len(l.regs)))
}

// callerIdentity is who a call comes from, for its rates: the verified
// client certificate's subject, or else the peer's address without its
// port.
func callerIdentity(ctx context.Context) string {
	if cert := verifiedCert(ctx); cert != nil {
		return "cert:" + cert.Subject.String()
	}
	return "addr:" + remoteHost(ctx)
}

// remoteHost is the caller's network address, without the port.
func remoteHost(ctx context.Context) string {
	addr := ""
	if ci, ok := callerInfoFrom(ctx); ok {
		addr = ci.addr
	} else if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
