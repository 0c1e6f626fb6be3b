package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// The ways a caller process of the multi-process scenario writes.
const (
	variantPut    = "etcd-put" // raw etcd puts
	variantDirect = "direct"   // pkg/client, straight to etcd
	variantAPI    = "api"      // pkg/apiclient, through a node's API
	// variantAPIUnary is variantAPI with a Submit call per submission
	// (apiclient.Config.UnarySubmit) rather than the client's stream.
	variantAPIUnary = "api-unary"
)

// workerSpec is the first value the run sends a caller process: what to
// do. It travels on the process's stdin, never its command line, since it
// may hold the etcd password.
type workerSpec struct {
	Variant     string            `json:"variant"`
	Endpoints   []string          `json:"endpoints,omitempty"`
	Security    etcdconn.Security `json:"security"`
	DialTimeout time.Duration     `json:"dial_timeout"`
	Namespace   string            `json:"namespace"`
	// APIAddr is the node API's address, for variantAPI.
	APIAddr string `json:"api_addr,omitempty"`
	// Name is the registration name of the process, for variantDirect
	// and variantAPI.
	Name string `json:"name,omitempty"`
	// Index is the process's number, which spreads the processes' keys.
	Index      int           `json:"index"`
	Goroutines int           `json:"goroutines"`
	Duration   time.Duration `json:"duration"`
	// Keys are the memcached keys of the coordinator's writes, RawPrefix
	// the prefix of the etcd keys of raw puts, RawKeys their number.
	Keys      []string `json:"keys"`
	RawPrefix string   `json:"raw_prefix"`
	RawKeys   int      `json:"raw_keys"`
	Value     []byte   `json:"value"`
}

// workerReady answers the spec once the process can start: connected and
// registered, or Error.
type workerReady struct {
	Error string `json:"error,omitempty"`
}

// workerGo is the common start signal: every process starts at Start and
// measures for the spec's Duration.
type workerGo struct {
	Start time.Time `json:"start"`
}

// workerResult is what a process measured: every latency of a successful
// operation, so that the run computes the percentiles of all of them.
type workerResult struct {
	Ops        int64  `json:"ops"`
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	Elapsed    int64  `json:"elapsed_ns"`
	// Late is how long after the common start the process started.
	Late int64 `json:"late_ns"`
	// CPU is the CPU time the process used from its start to the end of
	// its last operation.
	CPU       int64   `json:"cpu_ns"`
	Latencies []int64 `json:"latencies_ns"`
	Error     string  `json:"error,omitempty"`
}

// WorkerMain is a caller process of the multi-process scenario, run by
// `coordinator bench worker`: it reads what to do from in, connects,
// answers that it is ready, waits for the start signal, submits for the
// duration from its goroutines, writes what it measured to out, and, once
// in ends (the run has every process's result), closes what it opened. The
// protocol is JSON values, one a line, both ways.
func WorkerMain(ctx context.Context, in io.Reader, out io.Writer) error {
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	var spec workerSpec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("bench worker: read the spec: %w", err)
	}
	op, closeOp, err := spec.open(ctx)
	if err != nil {
		_ = enc.Encode(workerReady{Error: err.Error()})
		return err
	}
	defer closeOp()
	if err := enc.Encode(workerReady{}); err != nil {
		return err
	}
	var g workerGo
	if err := dec.Decode(&g); err != nil {
		return fmt.Errorf("bench worker: read the start signal: %w", err)
	}
	// Every process starts at the same instant of the machine's clock.
	t := time.NewTimer(time.Until(g.Start))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	// A process scheduled late still stops at the common end, and counts
	// its time from the common start.
	late := max(0, time.Since(g.Start))
	cpu0 := selfCPU()
	res := closedLoop(ctx, spec.Goroutines, spec.Duration-late, op)
	wr := workerResult{
		Ops: res.ops, Errors: res.errors, Elapsed: int64(late + res.elapsed), Late: int64(late),
		CPU: int64(selfCPU() - cpu0), Latencies: make([]int64, len(res.lat)),
	}
	for i, l := range res.lat {
		wr.Latencies[i] = int64(l)
	}
	if res.firstErr != nil {
		wr.FirstError = res.firstErr.Error()
	}
	if err := enc.Encode(wr); err != nil {
		return err
	}
	// Unregistering waits until the run has every process's result, so
	// that it stays out of the CPU time the run counts.
	for dec.Decode(new(json.RawMessage)) == nil {
	}
	return nil
}

// open connects as the variant needs and returns the operation of worker
// w (this process's goroutine number) and what closes the connections.
func (s workerSpec) open(ctx context.Context) (op func(ctx context.Context, w, i int) error, closeAll func(), err error) {
	if s.Goroutines < 1 || s.Duration <= 0 || len(s.Keys) == 0 || s.RawKeys < 1 {
		return nil, nil, errors.New("bench worker: incomplete spec")
	}
	key := func(w, i int) string {
		return s.Keys[benchenv.KeyIndex(s.Index*s.Goroutines+w, i, len(s.Keys))]
	}
	switch s.Variant {
	case variantPut:
		cli, err := etcdconn.Dial(ctx, etcdconn.Config{Endpoints: s.Endpoints, DialTimeout: s.DialTimeout, Security: s.Security})
		if err != nil {
			return nil, nil, err
		}
		value := string(s.Value)
		return func(ctx context.Context, w, i int) error {
			_, err := cli.Put(ctx, s.RawPrefix+strconv.Itoa(benchenv.KeyIndex(s.Index*s.Goroutines+w, i, s.RawKeys)), value)
			return err
		}, func() { cli.Close() }, nil
	case variantDirect:
		c, err := client.New(client.Config{Endpoints: s.Endpoints, DialTimeout: s.DialTimeout, Security: s.Security, Namespace: s.Namespace})
		if err != nil {
			return nil, nil, err
		}
		caller, err := c.Register(ctx, s.Name, client.RegisterConfig{TTL: benchenv.RegistrationTTL})
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return setOp(ctx, key, s.Value, caller.Set, caller.Close, c.Close)
	case variantAPI, variantAPIUnary:
		c, err := apiclient.New(apiclient.Config{Addr: s.APIAddr, UnarySubmit: s.Variant == variantAPIUnary})
		if err != nil {
			return nil, nil, err
		}
		caller, err := c.Register(ctx, s.Name, apiclient.RegisterConfig{TTL: benchenv.RegistrationTTL})
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return setOp(ctx, key, s.Value, caller.Set, caller.Close, c.Close)
	}
	return nil, nil, fmt.Errorf("bench worker: unknown variant %q", s.Variant)
}

// setOp is the operation of the variants that submit through a caller
// (direct and through the API): a set of the worker's next key, and a
// close that unregisters the caller before closing its client.
func setOp[T any](ctx context.Context, key func(w, i int) string, value []byte,
	set func(context.Context, string, []byte, time.Duration) (T, error),
	unregister func(context.Context) error, closeClient func() error,
) (func(context.Context, int, int) error, func(), error) {
	return func(ctx context.Context, w, i int) error {
			_, err := set(ctx, key(w, i), value, 0)
			return err
		}, func() {
			_ = unregister(context.WithoutCancel(ctx))
			_ = closeClient()
		}, nil
}
