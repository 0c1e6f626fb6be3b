// Package pyclient tests the Python client package (clients/python): it
// installs the package with Debian's python3 and pip, offline, starts three
// real coordinator nodes (the binary, as separate processes) with their
// caller API on one embedded etcd and one memcached, and runs the
// package's pytest suite (clients/python/tests) against them with Debian's
// python3-pytest. A failing Python test fails the Go test, with pytest's
// output.
package pyclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup) }

// python is Debian's interpreter: the packages scripts/install-deps.sh
// installs (python3-grpcio, python3-pytest, python3-pymemcache, pip and
// setuptools) are its own. The python3 first on PATH may be another one.
const python = "/usr/bin/python3"

// requirePython fails the test unless Debian's python3 has what the
// package and its tests need.
func requirePython(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("Debian's python3 is not installed: %v", err)
	}
	check := "import grpc, google.protobuf, pytest, pymemcache, setuptools, pip"
	if out, err := exec.Command(python, "-c", check).CombinedOutput(); err != nil {
		t.Fatalf("Debian's python3 lacks a package the Python client or its tests need "+
			"(scripts/install-deps.sh installs them): %v\n%s", err, out)
	}
	return python
}

// repoRoot is the repository's root directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// copyPackage copies the package's sources (not its tests, nor what a
// build left behind) into dst: pip builds in the directory it is given,
// and the working tree stays as it is.
func copyPackage(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			switch base := d.Name(); {
			case rel == "tests", base == "build", base == "__pycache__", base == ".pytest_cache",
				strings.HasSuffix(base, ".egg-info"):
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// install installs clients/python with pip into a directory of its own,
// offline (no index, Debian's setuptools as the build backend), and
// returns that directory, to put on PYTHONPATH.
func install(t *testing.T, py string) string {
	t.Helper()
	dir := t.TempDir()
	src, site := filepath.Join(dir, "src"), filepath.Join(dir, "site")
	copyPackage(t, filepath.Join(repoRoot(), "clients", "python"), src)
	cmd := exec.Command(py, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps",
		"--no-cache-dir", "--disable-pip-version-check", "--root-user-action=ignore", "--target", site, src)
	cmd.Env = pythonEnv("")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip install ./clients/python: %v\n%s", err, out)
	}
	return site
}

// pythonEnv is the environment of a Python process: this one's, with
// PYTHONPATH set to site only (and no bytecode written into the tree).
func pythonEnv(site string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHONPATH=") && !strings.HasPrefix(kv, "PYTHONHOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PYTHONDONTWRITEBYTECODE=1")
	if site != "" {
		env = append(env, "PYTHONPATH="+site)
	}
	return env
}

// apiNode is a node as the Python tests see it.
type apiNode struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	Pid  int    `json:"pid"`
}

// pyCluster is what the Python tests are given (COORDINATOR_PYTEST_ENV).
type pyCluster struct {
	Nodes     []apiNode `json:"nodes"`
	Memcached string    `json:"memcached"`
	Site      string    `json:"site"`
}

// startCluster starts an embedded etcd, a memcached and n coordinator
// nodes, each serving the caller API on a free loopback port.
func startCluster(t *testing.T, n int) pyCluster {
	t.Helper()
	srv, _ := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	c := pyCluster{Memcached: mc.Addr}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		addr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
		node := harness.StartNode(t, harness.NodeOptions{
			ID: fmt.Sprintf("py%d", i), Endpoints: srv.Endpoints(), Memcached: mc.Addr,
			// A leader starved of CPU by a busy machine keeps its lease for
			// 5 s: a change of leader would replay writes and blur the
			// memcached set count the failover test checks.
			LeaseTTL: 5 * time.Second,
			Extra:    []string{"--api-listen", addr},
		})
		if err := node.WaitOutput(ctx, "caller API listening"); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, apiNode{ID: node.ID, Addr: addr, Pid: node.Pid()})
	}
	return c
}

// TestPythonClient runs clients/python/tests with pytest against three
// real nodes. The suite's last test kills one of them with -9.
func TestPythonClient(t *testing.T) {
	py := requirePython(t)
	site := install(t, py)
	c := startCluster(t, 3)
	c.Site = site
	env, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 5*time.Minute)
	args := []string{"-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "--durations=5", "."}
	if testing.Verbose() {
		args = append(args, "-v")
	}
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Dir = filepath.Join(repoRoot(), "clients", "python", "tests")
	// PYTHONSAFEPATH keeps `python -m` from putting the working directory
	// first on sys.path: the package under test is the installed one.
	cmd.Env = append(pythonEnv(site), "PYTHONSAFEPATH=1", "COORDINATOR_PYTEST_ENV="+string(env))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pytest clients/python/tests: %v\n%s", err, out)
	}
	t.Logf("pytest clients/python/tests passed in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
}
