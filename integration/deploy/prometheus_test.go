package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

const (
	alertsPath     = "../../deploy/prometheus/alerts.yaml"
	alertsTestPath = "../../deploy/prometheus/alerts_test.yaml"
)

// TestPrometheusRules: promtool (Debian's prometheus package, installed by
// scripts/install-deps.sh) accepts the alert rules, and their unit tests
// pass: each alert fires on the series it is for, after its for:, and not
// before. That every metric they name exists on a live node is
// cmd/coordinator's TestServeProbesDiscoveryAndMetrics.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/install-deps.sh (Debian's prometheus package)")
	}
	for _, args := range [][]string{{"check", "rules", alertsPath}, {"test", "rules", alertsTestPath}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestPrometheusFiresMemcachedDown runs Debian's Prometheus against a live
// node (a coordinator process on its embedded etcd) with the alert rules
// loaded, their for: durations cut to 0s so that the test need not wait
// them out: once memcached stops, Prometheus's own API shows
// CoordinatorMemcachedDown firing for that server, and no alert fires
// before.
func TestPrometheusFiresMemcachedDown(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: run scripts/install-deps.sh (Debian's prometheus package)")
	}
	mc := testenv.StartMemcached(t)
	nodeAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	dir := t.TempDir()
	node := harness.Start(t, "coordinator", harness.Binary(t), "serve", "--data-dir", filepath.Join(dir, "etcd"),
		"--embed-listen", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)), "--http-listen", nodeAddr,
		"--memcached", mc.Addr, "--node-id", "prom", "--lease-ttl", "2s")
	t.Cleanup(func() { node.Stop(30 * time.Second) })

	rules, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+for:) \S+$`).ReplaceAll(rules, []byte("$1 0s"))
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: coordinator
    static_configs:
      - targets: [%q]
`, nodeAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	harness.Start(t, "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promAddr)

	type alert struct {
		Labels map[string]string `json:"labels"`
		State  string            `json:"state"`
	}
	// alerts returns the active alerts, nil when Prometheus did not
	// answer.
	alerts := func() []alert {
		resp, err := http.Get("http://" + promAddr + "/api/v1/alerts")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Alerts []alert `json:"alerts"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&body) != nil {
			return nil
		}
		// Not nil: an answer with no alerts is not a failed request.
		return append([]alert{}, body.Data.Alerts...)
	}
	// up: Prometheus scraped the node and evaluated the rules on it.
	upQuery := "http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(`coordinator_memcached_up{server="`+mc.Addr+`"} == 1`)
	testenv.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get(upQuery)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		return json.NewDecoder(resp.Body).Decode(&body) == nil && len(body.Data.Result) == 1
	}, "Prometheus never scraped the node with memcached up")
	// Once the rules are evaluated on what was scraped, a healthy node
	// with a leader fires nothing (before the first scrape, "no leader"
	// fires: no node reports leading).
	var firing []alert
	testenv.Eventually(t, 30*time.Second, func() bool {
		firing = alerts()
		return firing != nil && len(firing) == 0
	}, "alerts stayed active with memcached up: %v", &firing)

	mc.Stop()
	var last []alert
	testenv.Eventually(t, 60*time.Second, func() bool {
		last = alerts()
		for _, a := range last {
			if a.Labels["alertname"] == "CoordinatorMemcachedDown" && a.State == "firing" && a.Labels["server"] == mc.Addr {
				return true
			}
		}
		return false
	}, "CoordinatorMemcachedDown never fired for %s (alerts: %v)", mc.Addr, &last)
}
