package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The processes of a fleet phase: its etcd and its node, started fresh and
// stopped by their pids.

// fleetServers are the processes of one phase: etcd (unless the run's own
// is used) and the node.
type fleetServers struct {
	endpoints []string
	// etcd is the etcd process the phase started, nil when it uses the
	// run's; etcdPid is 0 when etcd's process is not known.
	etcd    *benchenv.Worker
	etcdPid int
	dir     string
	// cli is a connection to etcd, the run's own when etcd is.
	cli *clientv3.Client
	own bool
	// etcdMetrics is etcd's /metrics URL, empty when it cannot be read
	// without credentials.
	etcdMetrics string
	node        *benchenv.Child
	apiAddr     string
	nodeMetrics string
}

// startFleetServers starts the phase's etcd (when the run started its own)
// and node, and waits until the node is ready.
func (r *runner) startFleetServers(ctx context.Context, idx int, plan fleetPlan) (s *fleetServers, err error) {
	s = &fleetServers{}
	defer func() {
		if err != nil {
			_ = r.stopFleetServers(ctx, s)
			s = nil
		}
	}()
	if r.Embedded {
		if err := r.startFleetEtcd(ctx, idx, s); err != nil {
			return s, err
		}
	} else {
		s.endpoints, s.cli, s.etcdPid = r.Endpoints, r.Etcd, r.cfg.EtcdPID
		if strings.HasPrefix(s.endpoints[0], "http://") {
			s.etcdMetrics = strings.TrimSuffix(s.endpoints[0], "/") + "/metrics"
		}
	}
	var addrs fleetAddrs
	for _, a := range []*string{&addrs.API, &addrs.APIHTTP, &addrs.Metrics} {
		if *a, err = freeLoopback(); err != nil {
			return s, err
		}
	}
	node, err := r.StartServe(fmt.Sprintf("bench-fleet-%d", idx), s.endpoints, fleetNodeArgs(addrs, plan)...)
	if err != nil {
		return s, err
	}
	s.node, s.apiAddr, s.nodeMetrics = node, addrs.API, "http://"+addrs.Metrics+"/metrics"
	r.Progressf("  fleet: node pid %d, API gRPC %s, HTTP/JSON %s, metrics and pprof http://%s, etcd %s (pid %d)",
		node.Pid(), addrs.API, addrs.APIHTTP, addrs.Metrics, strings.Join(s.endpoints, ","), s.etcdPid)
	return s, waitReady(ctx, "http://"+addrs.Metrics+"/readyz", node)
}

// startFleetEtcd starts a single-member etcd in a child process of its own,
// in a fresh directory.
func (r *runner) startFleetEtcd(ctx context.Context, idx int, s *fleetServers) error {
	dir, err := os.MkdirTemp("", "coordinator-bench-fleet-")
	if err != nil {
		return err
	}
	s.dir = dir
	cmd, err := r.fleetCommand()
	if err != nil {
		return err
	}
	w, err := r.StartCommand(fmt.Sprintf("fleet-etcd-%d", idx), cmd)
	if err != nil {
		return err
	}
	s.etcd, s.etcdPid = w, w.Pid()
	if err := w.Send(fleetSpec{Role: fleetRoleEtcd, Dir: dir}); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, fleetWaitTimeout)
	defer cancel()
	var ready fleetReady
	if err := w.Receive(rctx, &ready); err != nil {
		return err
	}
	if ready.Error != "" || len(ready.Endpoints) == 0 {
		return fmt.Errorf("etcd did not start: %s; %s", ready.Error, w.Describe())
	}
	s.endpoints, s.own = ready.Endpoints, true
	s.etcdMetrics = strings.TrimSuffix(ready.Endpoints[0], "/") + "/metrics"
	s.cli, err = etcdconn.Dial(ctx, etcdconn.Config{Endpoints: ready.Endpoints, DialTimeout: r.cfg.DialTimeout})
	return err
}

// stopFleetServers stops the phase's node and etcd, each by its pid, and
// removes etcd's directory. With the run's etcd, it first waits until the
// node has applied what is pending.
func (r *runner) stopFleetServers(ctx context.Context, s *fleetServers) error {
	var err error
	if s.node != nil {
		if !s.own && s.cli != nil {
			err = r.WaitNothingPending(ctx)
		}
		r.StopChild(s.node)
	}
	if s.own && s.cli != nil {
		s.cli.Close()
	}
	if s.etcd != nil {
		// It stops etcd and exits once its stdin is closed.
		s.etcd.CloseInput()
		r.Reap(s.etcd.Child)
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
	return err
}

// fleetCommand returns the command that runs one process of the fleet
// scenario (FleetWorkerMain).
func (r *runner) fleetCommand() (*exec.Cmd, error) {
	if r.cfg.FleetWorker != nil {
		return r.cfg.FleetWorker(), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable to run the fleet's processes: %w", err)
	}
	return exec.Command(exe, FleetWorkerArgs...), nil
}

// freeLoopback returns a loopback address with a port free at the moment.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// fleetPoll is how often the scenario polls the node (readiness, streams).
const fleetPoll = 50 * time.Millisecond

// waitReady waits until url answers 200, failing early if node exits.
func waitReady(ctx context.Context, url string, node *benchenv.Child) error {
	ctx, cancel := context.WithTimeout(ctx, benchenv.ProbeTimeout)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-node.Exited():
			return fmt.Errorf("node exited before it was ready: %s", node.Describe())
		case <-ctx.Done():
			return fmt.Errorf("node not ready (%s): %w; %s", url, ctx.Err(), node.Describe())
		case <-time.After(fleetPoll):
		}
	}
}
