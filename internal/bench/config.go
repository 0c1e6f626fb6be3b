package bench

import (
	"cmp"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

const (
	defaultMemcached = node.DefaultMemcached
	maxBacklog       = 1_000_000
	defaultRegs      = 100_000
	defaultRounds    = 3
	defaultProcesses = 64
	defaultProcConc  = 4
	maxProcesses     = 1024
	maxProcConc      = 256
)

// Config configures a run. Zero values take the defaults noted.
type Config struct {
	// Endpoints of an existing etcd. Empty starts an embedded etcd in a
	// temporary directory on a free port, removed when the run ends.
	Endpoints []string
	// Security holds the TLS files and the etcd user of the connections to
	// Endpoints, the child nodes' included; unused with the embedded etcd.
	Security etcdconn.Security
	// Memcached servers, host:port; default 127.0.0.1:11211.
	Memcached []string
	// Scenarios to run; default DefaultScenarios.
	Scenarios []string
	// Concurrency levels of the submit scenario; default DefaultConcurrency.
	Concurrency []int
	// ValueSize is the size of every value; default 100.
	ValueSize int
	// Duration of each throughput measurement; default 5s.
	Duration time.Duration
	// Keys is the size of the key space; default 1000.
	Keys int
	// Names is the number of registration names submissions spread over;
	// default 16.
	Names int
	// Backlog is the number of operations of the drain scenario; default
	// 100000, at most 1000000.
	Backlog int
	// MemoryBacklog is the larger backlog of the memory scenario, which
	// compares a node's peak memory draining it with draining a tenth of
	// it; default 1000000, at most 1000000.
	MemoryBacklog int
	// Registrations is the number of registrations of the memory scenario;
	// default 100000.
	Registrations int
	// FleetIdle are the numbers of idle registrations the fleet scenario
	// holds, in increasing order, each phase compared with one holding
	// none; default DefaultFleetIdle (1000 and 10000), each at most 100000.
	FleetIdle []int
	// FleetTTL is the lease TTL of the fleet scenario's callers, whole
	// seconds from 2s to 24h; default 10s, the clients' default. Their
	// keep-alives go as 3/FleetTTL per registration.
	FleetTTL time.Duration
	// LeaseTTL is the nodes' leadership lease TTL; default 5s.
	LeaseTTL time.Duration
	// FailoverRounds is how many graceful stops and how many kills the
	// failover scenario measures; default 3.
	FailoverRounds int
	// Repeat is how many times the submit, end-to-end and peer scenarios
	// run each comparison, ours and its baselines in reverse order every
	// other time; each table row is then the median run and each ratio the
	// median of the runs' ratios, which steadies them on a noisy machine.
	// Default 1, at most 20.
	Repeat int
	// Processes is the number of caller processes of the multi-process
	// scenario; default 64, at most 1024.
	Processes int
	// ProcessConcurrency is the number of goroutines submitting in each
	// caller process of the multi-process scenario; default 4, at most 256.
	ProcessConcurrency int
	// EtcdPID is the process id of the etcd given with Endpoints when it
	// runs on this machine (a `coordinator serve` process, say): the
	// multi-process scenario counts its CPU time (/proc/PID/stat). Zero
	// counts none, which the report says. With the embedded etcd, etcd's
	// CPU time is the bench process's own and EtcdPID must be zero.
	EtcdPID int
	// NodeCPUProfile, when set, is a file the multi-process scenario
	// writes a CPU profile of the bench process into (the node's API, and
	// etcd when embedded) over the window of its API measurement: the
	// first run's into this path, run N's into the path with ".N" added.
	NodeCPUProfile string
	// DialTimeout bounds connecting to etcd; default 5s.
	DialTimeout time.Duration
	// Serve returns the command that runs one coordinator node as a child
	// process, given the arguments of `coordinator serve` (starting with
	// "serve"). Nil runs this executable (os.Executable) with them.
	Serve func(args []string) *exec.Cmd
	// Worker returns the command that runs one caller process of the
	// multi-process scenario: a process that calls WorkerMain with its
	// stdin and stdout. Nil runs this executable (os.Executable) with the
	// arguments `bench worker`, the coordinator CLI's hidden subcommand.
	Worker func() *exec.Cmd
	// FleetWorker returns the command that runs one process of the fleet
	// scenario: a process that calls FleetWorkerMain with its stdin and
	// stdout. Nil runs this executable (os.Executable) with
	// FleetWorkerArgs, the coordinator CLI's hidden `bench fleet-worker`.
	FleetWorker func() *exec.Cmd
	// Progress receives one line per step; nil discards it.
	Progress io.Writer
}

// withDefaults fills in defaults and checks the values.
func (c Config) withDefaults() (Config, error) {
	c = c.filled()
	return c, c.Validate()
}

// filled returns c with the defaults in place of zero values.
func (c Config) filled() Config {
	if len(c.Memcached) == 0 {
		c.Memcached = []string{defaultMemcached}
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = DefaultScenarios
	}
	if len(c.Concurrency) == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if len(c.FleetIdle) == 0 {
		c.FleetIdle = DefaultFleetIdle
	}
	c.FleetTTL = cmp.Or(c.FleetTTL, registry.DefaultTTL)
	c.ValueSize = cmp.Or(c.ValueSize, 100)
	c.Duration = cmp.Or(c.Duration, 5*time.Second)
	c.Keys = cmp.Or(c.Keys, 1000)
	c.Names = cmp.Or(c.Names, 16)
	c.Backlog = cmp.Or(c.Backlog, 100_000)
	c.MemoryBacklog = cmp.Or(c.MemoryBacklog, maxBacklog)
	c.Registrations = cmp.Or(c.Registrations, defaultRegs)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 5*time.Second)
	c.FailoverRounds = cmp.Or(c.FailoverRounds, defaultRounds)
	c.Repeat = cmp.Or(c.Repeat, 1)
	c.Processes = cmp.Or(c.Processes, defaultProcesses)
	c.ProcessConcurrency = cmp.Or(c.ProcessConcurrency, defaultProcConc)
	c.DialTimeout = cmp.Or(c.DialTimeout, 5*time.Second)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// Validate checks the values of a Config as its defaults fill it; its
// errors are *config.FieldError naming the field.
func (c Config) Validate() error {
	c = c.filled()
	seen := map[string]bool{}
	for _, s := range c.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return config.Errorf("bench", "Scenarios", "unknown scenario %q (known: %s)", s, strings.Join(AllScenarios, ","))
		}
		if seen[s] {
			return config.Errorf("bench", "Scenarios", "scenario %q named twice", s)
		}
		seen[s] = true
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 10_000 {
			return config.Errorf("bench", "Concurrency", "%d is not between 1 and 10000", n)
		}
	}
	for i, n := range c.FleetIdle {
		if n < 1 || n > maxFleetIdle {
			return config.Errorf("bench", "FleetIdle", "%d is not between 1 and %d", n, maxFleetIdle)
		}
		if i > 0 && n <= c.FleetIdle[i-1] {
			return config.Errorf("bench", "FleetIdle", "%d after %d: list them in increasing order, each once", n, c.FleetIdle[i-1])
		}
	}
	if c.FleetTTL < 2*time.Second || c.FleetTTL > registry.MaxTTL || c.FleetTTL%time.Second != 0 {
		return config.Errorf("bench", "FleetTTL", "%s is not whole seconds from 2s to %s", c.FleetTTL, registry.MaxTTL)
	}
	switch {
	case c.ValueSize < 1 || c.ValueSize > 512<<10:
		return config.Errorf("bench", "ValueSize", "%d is not between 1 and 524288", c.ValueSize)
	case c.Duration < 0:
		return config.Errorf("bench", "Duration", "%s is negative", c.Duration)
	case c.Keys < 1:
		return config.Errorf("bench", "Keys", "%d is under 1", c.Keys)
	case c.Names < 1 || c.Names > 10_000:
		return config.Errorf("bench", "Names", "%d is not between 1 and 10000", c.Names)
	case c.Backlog < 1 || c.Backlog > maxBacklog:
		return config.Errorf("bench", "Backlog", "%d is not between 1 and %d", c.Backlog, maxBacklog)
	case c.MemoryBacklog < 1 || c.MemoryBacklog > maxBacklog:
		return config.Errorf("bench", "MemoryBacklog", "%d is not between 1 and %d", c.MemoryBacklog, maxBacklog)
	case c.Registrations < 1 || c.Registrations > maxBacklog:
		return config.Errorf("bench", "Registrations", "%d is not between 1 and %d", c.Registrations, maxBacklog)
	case c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0:
		return config.Errorf("bench", "LeaseTTL", "%s is not whole seconds, at least 2s", c.LeaseTTL)
	case c.FailoverRounds < 1 || c.FailoverRounds > 100:
		return config.Errorf("bench", "FailoverRounds", "%d is not between 1 and 100", c.FailoverRounds)
	case c.Repeat < 1 || c.Repeat > maxRepeat:
		return config.Errorf("bench", "Repeat", "%d is not between 1 and %d", c.Repeat, maxRepeat)
	case c.Processes < 1 || c.Processes > maxProcesses:
		return config.Errorf("bench", "Processes", "%d is not between 1 and %d", c.Processes, maxProcesses)
	case c.ProcessConcurrency < 1 || c.ProcessConcurrency > maxProcConc:
		return config.Errorf("bench", "ProcessConcurrency", "%d is not between 1 and %d", c.ProcessConcurrency, maxProcConc)
	case c.EtcdPID < 0:
		return config.Errorf("bench", "EtcdPID", "%d is negative", c.EtcdPID)
	case c.EtcdPID > 0 && len(c.Endpoints) == 0:
		return config.Errorf("bench", "EtcdPID", "is for an etcd given with Endpoints; the embedded one runs in the bench process")
	}
	return nil
}

// envConfig is the part of c the environment is built from.
func (c Config) envConfig() benchenv.Config {
	return benchenv.Config{
		Endpoints: c.Endpoints, Memcached: c.Memcached, Names: c.Names, Keys: c.Keys, ValueSize: c.ValueSize,
		LeaseTTL: c.LeaseTTL, DialTimeout: c.DialTimeout, Security: c.Security, Serve: c.Serve, Worker: c.Worker, Progress: c.Progress,
	}
}
