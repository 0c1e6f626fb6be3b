package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// monitored is an in-process node with its monitor's base URL.
type monitored struct {
	*testenv.Node
	ID  string
	URL string
}

// startMonitored starts a node whose monitor listens on a free loopback
// port, with short health thresholds (memcached unreachable for over 300ms
// makes it not ready).
func startMonitored(t *testing.T, cfg node.Config, pprof bool) *monitored {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Monitor = &monitor.Config{Listener: ln, EnablePprof: pprof}
	cfg.Health = health.Config{MemcachedGrace: 300 * time.Millisecond, ProbeInterval: 50 * time.Millisecond}
	n := testenv.StartNode(t, cfg)
	return &monitored{Node: n, ID: cfg.NodeID, URL: "http://" + ln.Addr().String()}
}

// get returns the status and body of GET url.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// scrape is one /metrics answer: each sample's value by name and labels,
// as `name` or `name{k="v",...}` with the labels sorted.
type scrape map[string]float64

// scrapeMetrics scrapes n's /metrics and parses it as Prometheus text.
func scrapeMetrics(t testing.TB, n *monitored) scrape {
	t.Helper()
	code, body := get(t, n.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("%s /metrics: status %d: %s", n.ID, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s /metrics does not parse: %v", n.ID, err)
	}
	s := scrape{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Gauge != nil:
				s[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				s[key] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				s[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return s
}

// value returns the sample key of s, failing the test when it is absent.
func (s scrape) value(t testing.TB, key string) float64 {
	t.Helper()
	v, ok := s[key]
	if !ok {
		t.Fatalf("no sample %s in the scrape", key)
	}
	return v
}

// poll calls cond every few milliseconds until it reports true, failing
// the test after 30s with what and the last detail cond gave.
func poll(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s: %s (last: %s)", what, detail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitMetric polls n's /metrics until cond holds for the sample key, and
// returns that scrape.
func waitMetric(t testing.TB, n *monitored, key string, cond func(float64) bool, what string) scrape {
	t.Helper()
	var s scrape
	poll(t, n.ID+": "+key+" "+what, func() (bool, string) {
		s = scrapeMetrics(t, n)
		v, ok := s[key]
		return ok && cond(v), fmt.Sprintf("%v (present %v)", v, ok)
	})
	return s
}

// waitStatus polls n's path until it answers code, and returns the body.
func waitStatus(t testing.TB, n *monitored, path string, code int) string {
	t.Helper()
	var body string
	poll(t, fmt.Sprintf("%s %s answers %d", n.ID, path, code), func() (bool, string) {
		var got int
		got, body = get(t, n.URL+path)
		return got == code, fmt.Sprintf("%d %s", got, body)
	})
	return body
}

// waitLeader waits until the election shows id as the leader and holder of
// the latest term.
func waitLeader(t testing.TB, cli *clientv3.Client, layout keyspace.Layout, id string) election.Status {
	t.Helper()
	var st election.Status
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		st, err = election.Observe(ctx, cli, layout)
		return err == nil && st.Leader == id && st.TermHolder == id
	}, "%s never became leader", id)
	return st
}

// electionLease returns the lease of node id's election key.
func electionLease(t testing.TB, cli *clientv3.Client, layout keyspace.Layout, id string) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, layout.Election()+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var info election.LeaderInfo
		if json.Unmarshal(kv.Value, &info) == nil && info.NodeID == id {
			return clientv3.LeaseID(kv.Lease)
		}
	}
	t.Fatalf("%s has no election key", id)
	return 0
}
