package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// podman runs podman with Debian's runc and a containers.conf without
// default ulimits (crun, podman's default runtime here, cannot set them).
func podman(t *testing.T, conf string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// lazy is a message argument formatted only when printed.
type lazy func() string

func (l lazy) String() string { return l() }

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestContainerImage builds the image with scripts/build-image.sh and runs
// it as the manifests do (read-only root, no capabilities, no new
// privileges, the image's non-root user): `version` prints the stamped
// version, `serve` on its embedded etcd with a tmpfs data directory
// answers /readyz, and SIGTERM stops it with exit status 0.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman not found: run scripts/install-deps.sh (Debian's podman and runc)")
	}
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	suffix := strconv.Itoa(os.Getpid())
	tag, name := "localhost/coordinator-imagetest:"+suffix, "coordinator-imagetest-"+suffix
	const version = "v0.0.0-imagetest"
	build := exec.Command("bash", "../../scripts/build-image.sh", tag)
	build.Env = append(os.Environ(), "VERSION="+version, "CONTAINERS_CONF="+conf)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := podman(t, conf, "rmi", "--force", tag); err != nil {
			t.Logf("podman rmi %s: %v: %s", tag, err, out)
		}
	})

	out, err := podman(t, conf, "run", "--rm", tag, "version", "-o", "json")
	if err != nil || !strings.Contains(out, `"version":"`+version+`"`) && !strings.Contains(out, `"version": "`+version+`"`) {
		t.Errorf("version in the image = %v %s, want %s", err, out, version)
	}

	mc := testenv.StartMemcached(t)
	httpAddr := "127.0.0.1:" + freePort(t)
	// Host networking: the node's embedded etcd, its monitor and
	// memcached all on loopback ports picked free here. The tmpfs holds
	// etcd's first WAL segment, which etcd preallocates at 64 MiB, and
	// its database beside it.
	id, err := podman(t, conf, "run", "--detach", "--name", name, "--network", "host",
		"--read-only", "--tmpfs", "/data:rw,size=512m,mode=1777", "--cap-drop", "all",
		"--security-opt", "no-new-privileges", tag,
		"serve", "--data-dir", "/data/etcd", "--embed-listen", "127.0.0.1:"+freePort(t),
		"--http-listen", httpAddr, "--memcached", mc.Addr, "--node-id", "image", "--lease-ttl", "2s")
	if err != nil {
		t.Fatalf("podman run: %v: %s", err, id)
	}
	t.Cleanup(func() {
		if out, err := podman(t, conf, "rm", "--force", name); err != nil {
			t.Logf("podman rm %s: %v: %s", name, err, out)
		}
	})
	var last string
	testenv.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		return resp.StatusCode == http.StatusOK && strings.Contains(last, "ok role: leader")
	}, "the container never was ready (last: %s)", lazy(func() string {
		logs, _ := podman(t, conf, "logs", name)
		return last + "\n" + logs
	}))

	if out, err := podman(t, conf, "kill", "--signal", "TERM", name); err != nil {
		t.Fatalf("podman kill: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wait := exec.CommandContext(ctx, "podman", "--runtime", "runc", "wait", name)
	wait.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	code, err := wait.Output()
	if err != nil || strings.TrimSpace(string(code)) != "0" {
		logs, _ := podman(t, conf, "logs", name)
		t.Errorf("after SIGTERM the container exited %q (%v), want 0:\n%s", code, err, logs)
	}
}
