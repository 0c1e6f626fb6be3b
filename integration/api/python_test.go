package api

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// python3 is Debian's interpreter, whose python3-pymemcache
// scripts/install-deps.sh installs.
func python3(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("Debian's python3 is not installed: %v", err)
	}
	if out, err := exec.Command(py, "-c", "import pymemcache").CombinedOutput(); err != nil {
		t.Fatalf("python3-pymemcache is missing (scripts/install-deps.sh installs it): %v\n%s", err, out)
	}
	return py
}

// A real Python process, with only the standard library's HTTP client,
// registers, is refused as superseded, submits, waits until applied and
// reads the value back from memcached with pymemcache.
func TestPythonCaller(t *testing.T) {
	py := python3(t)
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "examples", "python", "coordinator_client.py")
	ctx := testenv.Ctx(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, py, script, "--api", "http://"+n.Addr, "--memcached", c.mc.Addr,
		"--name", "py-agent", "--key", "py-key", "--value", "from python")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("python caller: %v\n%s\n%s", err, out, stderr)
	}
	var res struct {
		Token       string  `json:"token"`
		Incarnation int64   `json:"incarnation"`
		Superseded  string  `json:"superseded"`
		Value       *string `json:"value"`
		Applied     string  `json:"applied"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &res); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	if res.Value == nil || *res.Value != "from python" {
		t.Fatalf("python read back %v, want %q (output %s)", res.Value, "from python", out)
	}
	if res.Superseded != "SUPERSEDED/409" {
		t.Fatalf("python's stale submit: %q, want SUPERSEDED/409", res.Superseded)
	}
	tok, err := tokenseq.ParseToken(res.Token)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := tokenseq.ParseToken(res.Applied)
	if err != nil || applied.Less(tok) {
		t.Fatalf("status after wait: applied %q, token %q (%v)", res.Applied, res.Token, err)
	}
	// Go reads the same item, whose flags carry the leader's term: pymemcache
	// without a serde returned the raw bytes whatever the flags.
	it, err := memcache.New(c.mc.Addr).Get("py-key")
	if err != nil || string(it.Value) != "from python" || it.Flags == 0 {
		t.Fatalf("py-key: %+v %v, want the value with the term in its flags", it, err)
	}
	// Unregistered at the end: the name is free.
	testenv.Eventually(t, 10*time.Second, func() bool {
		res := get(t, ctx, n.Addr, "/v1/registrations")
		regs, _ := res.Body["registrations"].([]any)
		return res.Code == 200 && len(regs) == 0
	}, "the python caller's registration is gone")
}
