package cli

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// TestVersionJSON: version -o json is one JSON document with the Go version
// and platform the binary was built with.
func TestVersionJSON(t *testing.T) {
	out, errOut, code := harness.Run(t, nil, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, errOut)
	}
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		Platform  string `json:"platform"`
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version -o json = %s", out)
	}
	for _, k := range []string{"commit", "commit_time", "modified"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("version -o json has no %q: %s", k, out)
		}
	}
}

// TestEnvironmentSetsFlags: COORDINATOR_<FLAG> sets a global flag, a flag
// on the command line wins over it, a bad value is a usage error naming the
// variable and not showing its value, and --help names the variables.
func TestEnvironmentSetsFlags(t *testing.T) {
	e := start(t)

	t.Setenv("COORDINATOR_ENDPOINTS", e.endpoint)
	t.Setenv("COORDINATOR_WRITE_OUT", "json")
	out, errOut, code := harness.Run(t, nil, "status")
	if code != 0 {
		t.Fatalf("status with $COORDINATOR_ENDPOINTS: exit %d: %s", code, errOut)
	}
	var st statusOut
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Leader != e.node.ID {
		t.Fatalf("status with $COORDINATOR_WRITE_OUT=json: %v\n%s", err, out)
	}

	// The flag wins: a variable naming an address nothing listens on does
	// not matter when --endpoints is given.
	t.Setenv("COORDINATOR_ENDPOINTS", "http://127.0.0.1:1")
	if _, errOut, code := harness.Run(t, nil, "--endpoints", e.endpoint, "status"); code != 0 {
		t.Fatalf("--endpoints over $COORDINATOR_ENDPOINTS: exit %d: %s", code, errOut)
	}

	t.Setenv("COORDINATOR_DIAL_TIMEOUT", "not-a-duration-secret")
	_, errOut, code = harness.Run(t, nil, "status")
	if code != 2 || !strings.Contains(errOut, "$COORDINATOR_DIAL_TIMEOUT") || strings.Contains(errOut, "not-a-duration-secret") {
		t.Errorf("bad $COORDINATOR_DIAL_TIMEOUT: exit %d, stderr %q; want 2, naming the variable, not its value", code, errOut)
	}

	help, _, _ := harness.Run(t, nil, "serve", "--help")
	for _, v := range []string{"$COORDINATOR_ENDPOINTS", "$COORDINATOR_MEMCACHED", "$COORDINATOR_NODE_ID"} {
		if !strings.Contains(help, v) {
			t.Errorf("serve --help does not name %s", v)
		}
	}
}

// TestStatusWatch: status --watch prints the summary, then a new row when
// it changes; SIGTERM ends it with status 0.
func TestStatusWatch(t *testing.T) {
	e := start(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	// With memcached down a submission stays pending, so the pending count
	// is a change the watch must show.
	e.mc.Stop()
	w := harness.Start(t, "status --watch", harness.Binary(t), "--endpoints", e.endpoint, "status", "--watch")
	if err := w.WaitOutput(ctx, "PENDING OPS"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(harness.Lines(w.Output())) >= 2 },
		"no first row:\n%s", w.Output())
	first := harness.Lines(w.Output())

	e.runOK(t, nil, "submit", "--as", "watched", "set", "k", "v")
	testenv.Eventually(t, 20*time.Second, func() bool { return len(harness.Lines(w.Output())) > len(first) },
		"status --watch printed no second frame after a submission:\n%s", w.Output())
	// The submission shows as a pending operation in some later frame (the
	// frames around it show its registration come and go).
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, l := range harness.Lines(w.Output())[len(first):] {
			if row := strings.Fields(l); len(row) == 10 && row[1] == e.node.ID && row[4] == "1" {
				return true
			}
		}
		return false
	}, "status --watch never showed the pending operation:\n%s", w.Output())
	if strings.Count(w.Output(), "PENDING OPS") != 1 {
		t.Errorf("status --watch repeated its header:\n%s", w.Output())
	}
	e.mc.Start()
	w.Stop(10 * time.Second)
	if code := w.ExitCode(); code != 0 {
		t.Errorf("status --watch exit %d after SIGTERM, want 0:\n%s", code, w.Output())
	}
}

// TestSubmitWaitProgress: submit --wait that waits longer than a second
// says on stderr what it waits behind.
func TestSubmitWaitProgress(t *testing.T) {
	e := start(t)
	e.mc.Stop()
	t.Cleanup(e.mc.Start)
	out, errOut, code := e.run(t, nil, "submit", "--as", "patient", "set", "k", "v", "--wait", "--wait-timeout", "2500ms")
	if code != 1 {
		t.Fatalf("submit --wait with memcached down: exit %d, want 1 (wait timed out)\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "waiting for token") || !strings.Contains(errOut, "pending, leader "+e.node.ID) {
		t.Errorf("no progress on stderr:\n%s", errOut)
	}
	if !strings.Contains(out, "false") {
		t.Errorf("stdout does not show the accepted, unapplied token:\n%s", out)
	}
}
