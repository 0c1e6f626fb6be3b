package pool_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

// pylibmcPython returns a python3 that imports pylibmc. It skips the test
// when there is none, unless CI is set: CI installs python3-pylibmc
// (scripts/install-deps.sh), so there its absence is a failure.
func pylibmcPython(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, name := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(name)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		out, err := exec.Command(p, "-c", "import pylibmc").CombinedOutput()
		if err == nil {
			return p
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", p, err, bytes.TrimSpace(out)))
	}
	msg := fmt.Sprintf("no python3 with pylibmc (scripts/install-deps.sh installs python3-pylibmc): %q", tried)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// pylibmcResult is read_ketama.py's report.
type pylibmcResult struct {
	Checked      int            `json:"checked"`
	MissingCount int            `json:"missing_count"`
	WrongCount   int            `json:"wrong_count"`
	Missing      []string       `json:"missing"`
	Wrong        []string       `json:"wrong"`
	Behaviors    map[string]any `json:"behaviors"`
}

// readWithPylibmc reads keys through pylibmc over servers with behaviors.
func readWithPylibmc(t *testing.T, python string, servers []hashring.Server, behaviors map[string]any, keys map[string]string) pylibmcResult {
	t.Helper()
	specs := make([]string, len(servers))
	for i, s := range servers {
		specs[i] = s.Addr + ":" + strconv.FormatUint(uint64(max(s.Weight, 1)), 10)
	}
	in, err := json.Marshal(map[string]any{"servers": specs, "behaviors": behaviors, "keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), python, "testdata/read_ketama.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("read_ketama.py: %v: %s", err, stderr.String())
	}
	var res pylibmcResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("read_ketama.py output %q: %v", out, err)
	}
	if res.Checked != len(keys) {
		t.Fatalf("read_ketama.py checked %d keys, want %d", res.Checked, len(keys))
	}
	return res
}

// readWithGomemcache reads keys with a plain gomemcache client over
// servers in order (its ServerList: the modula distribution) and returns
// the keys missing or holding another value.
func readWithGomemcache(t *testing.T, servers []hashring.Server, keys map[string]string) (bad []string) {
	t.Helper()
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr
	}
	mc := memcache.New(addrs...)
	defer mc.Close()
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	for i := 0; i < len(names); i += 100 {
		chunk := names[i:min(i+100, len(names))]
		got, err := mc.GetMulti(chunk)
		if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
			t.Fatal(err)
		}
		for _, k := range chunk {
			if it, ok := got[k]; !ok || string(it.Value) != keys[k] {
				bad = append(bad, k)
			}
		}
	}
	return bad
}
