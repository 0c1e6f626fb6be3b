package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/internal/bench"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

type benchOptions struct {
	memcached      string
	scenarios      string
	concurrency    string
	valueSize      int
	duration       time.Duration
	keys           int
	names          int
	backlog        int
	memoryBacklog  int
	registrations  int
	leaseTTL       time.Duration
	failoverRounds int
	repeat         int
	processes      int
	procConc       int
	fleetIdle      string
	fleetTTL       time.Duration
	cpuProfile     string
	nodeProfile    string
	etcdPID        int
}

func newBenchCommand(g *globalOptions) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the coordinator against raw etcd and memcached baselines",
		Long: `Measure throughput, latency, failover and memory of the coordinator on the etcd
and memcached given, next to baselines run in the same process against the
same servers: raw etcd puts and guarded transactions, an etcd mutex around
direct memcached sets, a lease-based leader writing directly, raw memcached
gets+cas. Each scenario prints the ratio ours/baseline.

Without --endpoints, bench starts its own embedded etcd in a temporary
directory on a free port. Either way it runs its own coordinator nodes (in
process, and as child processes of this executable for failover and memory;
multi-process runs its callers as child processes too, and the API they
submit through in process) in a namespace of its own, bench-<random>, and
deletes that namespace's keys from etcd and memcached when it ends. It
writes to memcached under keys prefixed with that namespace.

Scenarios (--scenarios, comma separated; memory, multi-process and fleet are opt-in):
  submit      accepted submissions/s and latency at each --concurrency,
              vs etcd put and etcd txn (compare + put)
  end-to-end  submitted → applied in memcached, ops/s and latency at
              concurrency 16 and 64, vs etcd put
  peer        the same workload with an etcd mutex per key around direct
              memcached sets, and with a lease-based leader setting directly
  drain       a --backlog submitted with no leader, then a leader started:
              time to apply it all, vs memcached gets+cas at concurrency 16
  failover    graceful stop (SIGTERM) and kill -9 of the leader: time to the
              new leader's first applied operation, with --lease-ttl
  memory      a node's peak RSS draining --memory-backlog/10 and
              --memory-backlog operations, and its RSS with --registrations
              registrations
  multi-process
              --processes caller processes (child processes of this
              executable) of --process-concurrency goroutines each,
              submitting through a node's API and directly to etcd, vs
              etcd put from as many processes, with the CPU time per
              submission of every process involved
  fleet       for each of --fleet-idle, that many idle registrations held
              from child processes, half through a node's API (KeepAlive
              streams) and half direct (pkg/client sessions), while 64
              callers submit through the API: etcd's lease keep-alives/s,
              the node's RSS and goroutines per idle API caller, etcd's RSS
              and database size per registration, the registration rate,
              and the active callers' ops/s and p99 vs none idle; the node
              and etcd run as processes of their own

Progress goes to stderr; the report to stdout (-o json for machines).`,
		Example: `  # everything cheap, on an embedded etcd and a local memcached
  coordinator bench --memcached 127.0.0.1:11211

  # against a real cluster, quick
  coordinator bench --endpoints http://etcd-1:2379 --memcached mc-1:11211 \
      --scenarios submit,end-to-end --duration 2s -o json

  # the leader's memory while draining a million operations
  coordinator bench --scenarios memory

  # 64 caller processes through one node's API, direct, and raw puts
  coordinator bench --scenarios multi-process --processes 64

  # 1,000 and 10,000 idle callers while 64 submit
  coordinator bench --scenarios fleet --fleet-idle 1000,10000`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.memcached, "memcached", node.DefaultMemcached, "memcached servers, host:port, comma separated")
	f.StringVar(&o.scenarios, "scenarios", strings.Join(bench.DefaultScenarios, ","),
		"scenarios to run, comma separated: "+strings.Join(bench.AllScenarios, ","))
	f.StringVar(&o.concurrency, "concurrency", joinInts(bench.DefaultConcurrency),
		"concurrency levels of the submit scenario, comma separated")
	f.IntVar(&o.valueSize, "value-size", 100, "size of every value, in bytes")
	f.DurationVar(&o.duration, "duration", 5*time.Second, "duration of each throughput measurement")
	f.IntVar(&o.keys, "keys", 1000, "number of memcached keys the operations spread over")
	f.IntVar(&o.names, "names", 16, "number of registration names submissions spread over")
	f.IntVar(&o.backlog, "backlog", 100000, "operations in the backlog of drain (at most 1000000)")
	f.IntVar(&o.memoryBacklog, "memory-backlog", 1000000, "operations in the larger backlog of memory (at most 1000000)")
	f.IntVar(&o.registrations, "registrations", 100000, "registrations of the memory scenario")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 5*time.Second, "the nodes' leadership lease TTL (whole seconds, at least 2s)")
	f.IntVar(&o.failoverRounds, "failover-rounds", 3, "graceful stops and kills measured by failover, each")
	f.IntVar(&o.repeat, "repeat", 1, "runs of each comparison of submit, end-to-end and peer, "+
		"in reverse order every other run; tables show the median run, "+
		"ratios the median of the runs' ratios (at most 20)")
	f.IntVar(&o.processes, "processes", 64, "caller processes of the multi-process scenario (at most 1024)")
	f.IntVar(&o.procConc, "process-concurrency", 4,
		"goroutines submitting in each caller process of the multi-process scenario (at most 256)")
	f.StringVar(&o.fleetIdle, "fleet-idle", joinInts(bench.DefaultFleetIdle),
		"idle registrations of each phase of the fleet scenario, comma separated, increasing (each at most 100000)")
	f.DurationVar(&o.fleetTTL, "fleet-ttl", 10*time.Second,
		"lease TTL of the fleet scenario's callers (whole seconds, at least 2s); keep-alives go as 3/TTL per registration")
	f.StringVar(&o.cpuProfile, "cpuprofile", "",
		"write a CPU profile of this process (clients, in-process node and embedded etcd) to this file")
	f.StringVar(&o.nodeProfile, "cpuprofile-node", "", "multi-process: write a CPU profile of this process "+
		"(the node's API, embedded etcd) over each API measurement to this file (run N's to FILE.N)")
	f.IntVar(&o.etcdPID, "etcd-pid", 0, "multi-process: the pid of the process serving --endpoints' etcd, whose CPU time to count")
	cmd.AddCommand(newBenchWorkerCommand(), newBenchFleetWorkerCommand())
	return cmd
}

// newBenchWorkerCommand is a caller process of the multi-process scenario,
// which bench runs as its own child: it talks with bench in JSON on its
// stdin and stdout and is no command for people.
func newBenchWorkerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "A caller process of bench's multi-process scenario (run by bench itself)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.WorkerMain(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

// newBenchFleetWorkerCommand is a process of the fleet scenario (etcd, or
// callers holding or submitting), which bench runs as its own child: it
// talks with bench in JSON on its stdin and stdout and is no command for
// people.
func newBenchFleetWorkerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "fleet-worker",
		Short:  "A process of bench's fleet scenario (run by bench itself)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.FleetWorkerMain(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// config checks the flags and builds the bench configuration.
func (o *benchOptions) config(cmd *cobra.Command, g *globalOptions) (bench.Config, error) {
	if err := g.validate(); err != nil {
		return bench.Config{}, err
	}
	cfg := bench.Config{
		Memcached: splitList(o.memcached), Scenarios: splitList(o.scenarios), ValueSize: o.valueSize,
		Duration: o.duration, Keys: o.keys, Names: o.names, Backlog: o.backlog,
		MemoryBacklog: o.memoryBacklog, Registrations: o.registrations,
		LeaseTTL: o.leaseTTL, FailoverRounds: o.failoverRounds, Repeat: o.repeat, DialTimeout: g.dialTimeout,
		Processes: o.processes, ProcessConcurrency: o.procConc, Progress: cmd.ErrOrStderr(),
		NodeCPUProfile: o.nodeProfile, EtcdPID: o.etcdPID, FleetTTL: o.fleetTTL,
	}
	if cmd.Flags().Changed("endpoints") || cmd.Root().PersistentFlags().Changed("endpoints") {
		cfg.Endpoints = g.endpointList()
		cfg.Security = g.security()
	}
	if len(cfg.Memcached) == 0 {
		return cfg, usagef("--memcached is empty")
	}
	if len(cfg.Scenarios) == 0 {
		return cfg, usagef("--scenarios is empty")
	}
	for _, s := range splitList(o.concurrency) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return cfg, usagef("--concurrency: %q is not a number", s)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	if len(cfg.Concurrency) == 0 {
		return cfg, usagef("--concurrency is empty")
	}
	for _, s := range splitList(o.fleetIdle) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return cfg, usagef("--fleet-idle: %q is not a number", s)
		}
		cfg.FleetIdle = append(cfg.FleetIdle, n)
	}
	if o.duration <= 0 {
		return cfg, usagef("--duration must be positive (got %s)", o.duration)
	}
	if o.valueSize < 1 || o.keys < 1 || o.names < 1 || o.backlog < 1 || o.memoryBacklog < 1 ||
		o.registrations < 1 || o.failoverRounds < 1 || o.repeat < 1 {
		return cfg, usagef("--value-size, --keys, --names, --backlog, --memory-backlog, " +
			"--registrations, --failover-rounds and --repeat must be at least 1")
	}
	if o.processes < 1 || o.procConc < 1 {
		return cfg, usagef("--processes and --process-concurrency must be at least 1")
	}
	if o.cpuProfile != "" && o.nodeProfile != "" {
		return cfg, usagef("--cpuprofile and --cpuprofile-node: one CPU profile at a time")
	}
	return cfg, nil
}

func runBench(cmd *cobra.Command, g *globalOptions, o *benchOptions) error {
	cfg, err := o.config(cmd, g)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(cmd.Context(), cfg)
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return usageMsg(fe.Field+": "+fe.Rule, err)
	}
	if rep != nil {
		if perr := printBench(cmd.OutOrStdout(), g.output, rep); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// printBench prints the report: one JSON document, or a block of tables.
func printBench(w io.Writer, format string, rep *bench.Report) error {
	if format == "json" {
		return newPrinter("json", w).print(benchJSON{rep})
	}
	env := rep.Environment
	etcd := env.EtcdVersion
	if env.EmbeddedEtcd {
		etcd += " (embedded)"
	}
	fmt.Fprintf(w, "coordinator bench  %s  go %s  etcd %s  memcached %s  %d CPUs  load %s\n",
		env.Date.Format(time.RFC3339), env.GoVersion, etcd, env.MemcachedVersion, env.CPUs, env.LoadAverage)
	s := rep.Settings
	fmt.Fprintf(w, "value %d B  keys %d  names %d  duration %gs  repeat %d  backlog %d  memory backlog %d  lease TTL %gs  namespace %s\n",
		s.ValueSize, s.Keys, s.Names, s.DurationSec, s.Repeat, s.Backlog, s.MemoryBacklog, s.LeaseTTLSec, rep.Namespace)
	p := newPrinter("table", w)
	for _, sc := range rep.Scenarios {
		fmt.Fprintf(w, "\n%s (%.0fs)\n", strings.ToUpper(sc.Name), sc.Seconds)
		if err := p.print(measurementsView(sc.Measurements)); err != nil {
			return err
		}
		if len(sc.Ratios) > 0 {
			fmt.Fprintln(w)
			if err := p.print(ratiosView(sc.Ratios)); err != nil {
				return err
			}
		}
		for _, m := range sc.Measurements {
			switch {
			case m.Note == "":
			case m.Concurrency > 0:
				fmt.Fprintf(w, "  note: %s, c=%d: %s\n", m.What, m.Concurrency, m.Note)
			default:
				fmt.Fprintf(w, "  note: %s: %s\n", m.What, m.Note)
			}
		}
		for _, n := range sc.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\nTARGETS")
		return p.print(targetsView(rep.Targets))
	}
	return nil
}

// benchJSON is the JSON output of bench: the report itself.
type benchJSON struct{ *bench.Report }

func (benchJSON) header() []string { return nil }
func (benchJSON) rows() [][]string { return nil }

type measurementsView []bench.Measurement

func (measurementsView) header() []string {
	return []string{"WHAT", "CONC", "OPS", "ERRORS", "OPS/S", "P50 MS", "P99 MS", "MAX MS", "VALUE"}
}

func (v measurementsView) rows() [][]string {
	var out [][]string
	for _, m := range v {
		value := "-"
		if m.Unit != "" {
			value = fmt.Sprintf("%.1f %s", m.Value, m.Unit)
		}
		out = append(out, []string{
			m.What, intOrDash(m.Concurrency), strconv.FormatInt(m.Ops, 10), strconv.FormatInt(m.Errors, 10),
			floatOrDash(m.OpsPerSec, 0), floatOrDash(m.P50Ms, 2), floatOrDash(m.P99Ms, 2), floatOrDash(m.MaxMs, 2), value,
		})
	}
	return out
}

type ratiosView []bench.Ratio

func (ratiosView) header() []string { return []string{"RATIO", "CONC", "VALUE", "RUNS"} }

func (v ratiosView) rows() [][]string {
	var out [][]string
	for _, r := range v {
		runs := "-"
		if len(r.Runs) > 0 {
			xs := make([]string, len(r.Runs))
			for i, x := range r.Runs {
				xs[i] = fmt.Sprintf("%.2f", x)
			}
			runs = strings.Join(xs, " ")
		}
		out = append(out, []string{r.Name, intOrDash(r.Concurrency), fmt.Sprintf("%.2f", r.Value), runs})
	}
	return out
}

type targetsView []bench.Target

func (targetsView) header() []string { return []string{"TARGET", "WANT", "GOT", "MET"} }

func (v targetsView) rows() [][]string {
	var out [][]string
	for _, t := range v {
		met := "no"
		if t.Met {
			met = "yes"
		}
		out = append(out, []string{t.Name, t.Want, t.Got, met})
	}
	return out
}

func intOrDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func floatOrDash(f float64, prec int) string {
	if f == 0 {
		return "-"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}
