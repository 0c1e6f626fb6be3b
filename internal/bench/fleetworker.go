package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// FleetWorkerArgs are the arguments that make the coordinator CLI a
// process of the fleet scenario (its hidden `bench fleet-worker`
// subcommand), when Config.FleetWorker is nil.
var FleetWorkerArgs = []string{"bench", "fleet-worker"}

// The roles of a process of the fleet scenario.
const (
	// fleetRoleEtcd serves a single-member etcd (package embedded), so
	// that etcd's memory and CPU are its own process's.
	fleetRoleEtcd = "etcd"
	// fleetRoleAPI holds idle registrations through a node's API
	// (pkg/apiclient), each with its KeepAlive stream.
	fleetRoleAPI = "idle-api"
	// fleetRoleDirect holds idle registrations straight on etcd
	// (pkg/client sessions), each with its lease kept alive by the
	// process's etcd client.
	fleetRoleDirect = "idle-direct"
	// fleetRoleActive registers callers through a node's API and submits
	// from one goroutine per caller, one set at a time.
	fleetRoleActive = "active"
)

// fleetSpec is the first value the run sends a process of the fleet
// scenario: what to do. It travels on the process's stdin, never its
// command line, since it may hold the etcd password.
type fleetSpec struct {
	Role string `json:"role"`
	// Dir is the data directory of fleetRoleEtcd.
	Dir string `json:"dir,omitempty"`
	// APIAddr is the node API's address (fleetRoleAPI, fleetRoleActive).
	APIAddr string `json:"api_addr,omitempty"`
	// Endpoints, Security, DialTimeout and Namespace are etcd's and the
	// run's (fleetRoleDirect).
	Endpoints   []string          `json:"endpoints,omitempty"`
	Security    etcdconn.Security `json:"security"`
	DialTimeout time.Duration     `json:"dial_timeout"`
	Namespace   string            `json:"namespace,omitempty"`
	// Prefix and Count name the process's registrations: Prefix followed
	// by 0 to Count-1.
	Prefix string `json:"prefix,omitempty"`
	Count  int    `json:"count,omitempty"`
	// PerConn is how many registrations share one connection (one
	// apiclient.Client, or one client.Client and its etcd connection).
	PerConn int `json:"per_conn,omitempty"`
	// Concurrency is how many registrations (and, at the end,
	// unregistrations) the process makes at once.
	Concurrency int `json:"concurrency,omitempty"`
	// TTL is every registration's lease TTL.
	TTL time.Duration `json:"ttl,omitempty"`
	// Index spreads the active processes' keys; Keys, Value and Duration
	// are what fleetRoleActive writes and for how long.
	Index    int           `json:"index,omitempty"`
	Keys     []string      `json:"keys,omitempty"`
	Value    []byte        `json:"value,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
}

// fleetReady answers the spec: connected (and, for fleetRoleActive,
// registered), or Error. fleetRoleEtcd says where it serves.
type fleetReady struct {
	Endpoints []string `json:"endpoints,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// fleetGo is the common start signal.
type fleetGo struct {
	Start time.Time `json:"start"`
}

// fleetRegistered is what a holding process reports once it has made its
// registrations: how many, how many failed, and every successful
// registration's latency. Elapsed runs from the common start to its last
// registration's end.
type fleetRegistered struct {
	Registered int64   `json:"registered"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Elapsed    int64   `json:"elapsed_ns"`
	Latencies  []int64 `json:"latencies_ns"`
}

// fleetReleased is what a holding process reports when told to stop (its
// stdin closed): how many of its registrations ended before that (a lost
// lease, re-registered or not, or a superseded name), and how its
// unregistrations went.
type fleetReleased struct {
	Lost            int64  `json:"lost"`
	FirstLoss       string `json:"first_loss,omitempty"`
	Unregistered    int64  `json:"unregistered"`
	UnregisterErrs  int64  `json:"unregister_errors"`
	FirstUnregError string `json:"first_unregister_error,omitempty"`
}

// fleetActiveResult is what an active process measured: as workerResult,
// every successful submission's latency.
type fleetActiveResult struct {
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Elapsed    int64   `json:"elapsed_ns"`
	Late       int64   `json:"late_ns"`
	Latencies  []int64 `json:"latencies_ns"`
}

// FleetWorkerMain is a process of the fleet scenario, run by `coordinator
// bench fleet-worker`: it reads its spec from in and plays its role, talking
// with the run in JSON values, one a line, both ways. It returns once in
// ends (the run is done with it) or ctx does, having closed what it opened.
func FleetWorkerMain(ctx context.Context, in io.Reader, out io.Writer) error {
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	var spec fleetSpec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("bench fleet-worker: read the spec: %w", err)
	}
	var err error
	switch spec.Role {
	case fleetRoleEtcd:
		err = fleetEtcd(ctx, spec, dec, enc)
	case fleetRoleAPI, fleetRoleDirect:
		err = fleetHold(ctx, spec, dec, enc)
	case fleetRoleActive:
		err = fleetSubmit(ctx, spec, dec, enc)
	default:
		err = fmt.Errorf("unknown role %q", spec.Role)
		_ = enc.Encode(fleetReady{Error: err.Error()})
	}
	if err != nil {
		return fmt.Errorf("bench fleet-worker %s: %w", spec.Role, err)
	}
	return nil
}

// waitEnd returns once the run closes the process's stdin (or sends
// anything more) or ctx ends.
func waitEnd(ctx context.Context, dec *json.Decoder) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dec.Decode(new(json.RawMessage))
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// fleetEtcd serves etcd until the run is done with it.
func fleetEtcd(ctx context.Context, spec fleetSpec, dec *json.Decoder, enc *json.Encoder) error {
	srv, err := embedded.Start(ctx, embedded.Config{
		Dir: spec.Dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", LogLevel: "fatal",
	})
	if err != nil {
		_ = enc.Encode(fleetReady{Error: err.Error()})
		return err
	}
	defer srv.Close()
	if err := enc.Encode(fleetReady{Endpoints: srv.Endpoints()}); err != nil {
		return err
	}
	waitEnd(ctx, dec)
	return nil
}

// holder is one idle registration of a holding process.
type holder interface {
	// lost reports whether the registration ended, or lost its lease, while
	// held; reason says how.
	lost() (reason string, ok bool)
	close(ctx context.Context) error
}

type apiHolder struct{ c *apiclient.Caller }

func (h apiHolder) lost() (string, bool) {
	select {
	case <-h.c.Done():
		return fmt.Sprintf("%s: %v", h.c.Name(), h.c.Err()), true
	default:
		return "", false
	}
}

func (h apiHolder) close(ctx context.Context) error { return h.c.Close(ctx) }

type sessionHolder struct {
	name string
	s    *client.Session
}

func (h sessionHolder) lost() (string, bool) {
	if err := h.s.Err(); err != nil {
		return fmt.Sprintf("%s: %v", h.name, err), true
	}
	if st := h.s.Stats(); st.Renewals > 0 {
		return fmt.Sprintf("%s: lease lost and registered again %d times", h.name, st.Renewals), true
	}
	return "", false
}

func (h sessionHolder) close(ctx context.Context) error { return h.s.Close(ctx) }

// fleetHold makes the spec's registrations from the common start, reports
// them, holds them idle until the run closes its stdin, then reports which
// were lost and unregisters them all.
func fleetHold(ctx context.Context, spec fleetSpec, dec *json.Decoder, enc *json.Encoder) error {
	if spec.Count < 1 || spec.PerConn < 1 || spec.Concurrency < 1 {
		err := errors.New("incomplete spec")
		_ = enc.Encode(fleetReady{Error: err.Error()})
		return err
	}
	conns := (spec.Count + spec.PerConn - 1) / spec.PerConn
	var register func(ctx context.Context, conn int, name string) (holder, error)
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	switch spec.Role {
	case fleetRoleAPI:
		cs := make([]*apiclient.Client, conns)
		for i := range cs {
			c, err := apiclient.New(apiclient.Config{Addr: spec.APIAddr})
			if err != nil {
				_ = enc.Encode(fleetReady{Error: err.Error()})
				return err
			}
			cs[i], closers = c, append(closers, c.Close)
		}
		register = func(ctx context.Context, conn int, name string) (holder, error) {
			c, err := cs[conn].Register(ctx, name, apiclient.RegisterConfig{TTL: spec.TTL})
			if err != nil {
				return nil, err
			}
			return apiHolder{c}, nil
		}
	default:
		cs := make([]*client.Client, conns)
		for i := range cs {
			c, err := client.New(client.Config{
				Endpoints: spec.Endpoints, DialTimeout: spec.DialTimeout, Security: spec.Security, Namespace: spec.Namespace,
			})
			if err != nil {
				_ = enc.Encode(fleetReady{Error: err.Error()})
				return err
			}
			cs[i], closers = c, append(closers, c.Close)
		}
		register = func(ctx context.Context, conn int, name string) (holder, error) {
			s, err := cs[conn].NewSession(ctx, name, client.SessionConfig{TTL: spec.TTL})
			if err != nil {
				return nil, err
			}
			return sessionHolder{name, s}, nil
		}
	}
	if err := enc.Encode(fleetReady{}); err != nil {
		return err
	}
	var g fleetGo
	if err := dec.Decode(&g); err != nil {
		return fmt.Errorf("read the start signal: %w", err)
	}
	if !waitUntil(ctx, g.Start) {
		return ctx.Err()
	}
	holders := make([]holder, spec.Count)
	rep := fleetRegistered{Latencies: make([]int64, 0, spec.Count)}
	var mu sync.Mutex
	eachIndex(spec.Count, spec.Concurrency, func(i int) {
		t0 := time.Now()
		h, err := register(ctx, i/spec.PerConn, fmt.Sprintf("%s%d", spec.Prefix, i))
		d := time.Since(t0)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if rep.Errors == 0 {
				rep.FirstError = err.Error()
			}
			rep.Errors++
			return
		}
		holders[i] = h
		rep.Registered++
		rep.Latencies = append(rep.Latencies, int64(d))
	})
	rep.Elapsed = int64(time.Since(g.Start))
	if err := enc.Encode(rep); err != nil {
		return err
	}
	waitEnd(ctx, dec)
	var rel fleetReleased
	for _, h := range holders {
		if h == nil {
			continue
		}
		if reason, ok := h.lost(); ok {
			if rel.Lost == 0 {
				rel.FirstLoss = reason
			}
			rel.Lost++
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fleetReleaseTimeout)
	defer cancel()
	eachIndex(len(holders), spec.Concurrency, func(i int) {
		if holders[i] == nil {
			return
		}
		err := holders[i].close(cctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if rel.UnregisterErrs == 0 {
				rel.FirstUnregError = err.Error()
			}
			rel.UnregisterErrs++
			return
		}
		rel.Unregistered++
	})
	return enc.Encode(rel)
}

// fleetReleaseTimeout bounds a holding process's unregistrations.
const fleetReleaseTimeout = 2 * time.Minute

// fleetSubmit registers the spec's callers through the API, then submits
// from one goroutine per caller from the common start for the spec's
// duration, reports what it measured and, once the run closes its stdin,
// unregisters them.
func fleetSubmit(ctx context.Context, spec fleetSpec, dec *json.Decoder, enc *json.Encoder) error {
	if spec.Count < 1 || spec.Duration <= 0 || len(spec.Keys) == 0 {
		err := errors.New("incomplete spec")
		_ = enc.Encode(fleetReady{Error: err.Error()})
		return err
	}
	c, err := apiclient.New(apiclient.Config{Addr: spec.APIAddr})
	if err != nil {
		_ = enc.Encode(fleetReady{Error: err.Error()})
		return err
	}
	defer c.Close()
	callers := make([]*apiclient.Caller, spec.Count)
	var firstErr atomic.Pointer[error]
	eachIndex(spec.Count, spec.Count, func(i int) {
		cl, err := c.Register(ctx, fmt.Sprintf("%s%d", spec.Prefix, i), apiclient.RegisterConfig{TTL: spec.TTL})
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
			return
		}
		callers[i] = cl
	})
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fleetReleaseTimeout)
		defer cancel()
		eachIndex(len(callers), len(callers), func(i int) {
			if callers[i] != nil {
				_ = callers[i].Close(cctx)
			}
		})
	}()
	if p := firstErr.Load(); p != nil {
		_ = enc.Encode(fleetReady{Error: (*p).Error()})
		return *p
	}
	if err := enc.Encode(fleetReady{}); err != nil {
		return err
	}
	var g fleetGo
	if err := dec.Decode(&g); err != nil {
		return fmt.Errorf("read the start signal: %w", err)
	}
	if !waitUntil(ctx, g.Start) {
		return ctx.Err()
	}
	late := max(0, time.Since(g.Start))
	res := closedLoop(ctx, spec.Count, spec.Duration-late, func(ctx context.Context, w, i int) error {
		key := spec.Keys[benchenv.KeyIndex(spec.Index*spec.Count+w, i, len(spec.Keys))]
		_, err := callers[w].Set(ctx, key, spec.Value, 0)
		return err
	})
	ar := fleetActiveResult{
		Ops: res.ops, Errors: res.errors, Elapsed: int64(late + res.elapsed), Late: int64(late),
		Latencies: make([]int64, len(res.lat)),
	}
	for i, l := range res.lat {
		ar.Latencies[i] = int64(l)
	}
	if res.firstErr != nil {
		ar.FirstError = res.firstErr.Error()
	}
	if err := enc.Encode(ar); err != nil {
		return err
	}
	// Unregistering waits until the run has every process's result.
	waitEnd(ctx, dec)
	return nil
}

// waitUntil waits until t, or until ctx ends (false).
func waitUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// eachIndex calls f for 0..n-1 from conc goroutines and returns when every
// call has.
func eachIndex(n, conc int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(n, conc)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
