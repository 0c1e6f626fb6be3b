// Package walkthrough runs the README's failover walk-through as written,
// on the development set-up of scripts/run-dev.sh (with its ports moved to
// free ones): a second node against the same etcd takes over at once when
// the first is stopped with Ctrl-C, and goes on leading, since etcd and
// memcached run in processes of their own.
package walkthrough

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// readyz returns the body of a node's /readyz/applier.
func readyz(addr string) string {
	resp, err := http.Get("http://" + addr + "/readyz/applier")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// lastReadyz is a node's /readyz/applier, read when a failure message is
// printed.
type lastReadyz string

func (a lastReadyz) String() string { return readyz(string(a)) }

func TestFailoverWalkthrough(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	port := func() string { return strconv.Itoa(harness.FreePort(t)) }
	etcdAddr, mcPort := "127.0.0.1:"+port(), port()
	first, firstAPI, second := "127.0.0.1:"+port(), "127.0.0.1:"+port(), "127.0.0.1:"+port()
	const leaseTTL = 5 * time.Second // the README's default

	// Terminal 1: scripts/run-dev.sh, in a process group of its own as a
	// terminal's foreground job is.
	var out testenv.SyncBuffer
	dev := exec.Command("bash", "scripts/run-dev.sh", "--node-id", "first", "--http-listen", first, "--api-listen", firstAPI)
	dev.Dir = root
	dev.Env = append(os.Environ(), "DEV_ETCD_ADDR="+etcdAddr, "DEV_MEMCACHED_PORT="+mcPort,
		"DEV_ETCD_DATA_DIR="+filepath.Join(t.TempDir(), "etcd"))
	dev.Stdout, dev.Stderr = &out, &out
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	pgid := dev.Process.Pid
	ctrlC := func() { _ = syscall.Kill(-pgid, syscall.SIGINT) }
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			// The script, its node, etcd and memcached, by their group.
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("---- scripts/run-dev.sh ----\n%s", out.String())
		}
	})
	testenv.Eventually(t, 3*time.Minute, func() bool {
		return strings.Contains(readyz(first), "ok role: leader of term 1, applying")
	}, "the dev node never led (last: %s)", lastReadyz(first))

	// Terminal 2: the README's second node (with the moved ports).
	node2 := harness.Start(t, "second", filepath.Join(root, "bin", "coordinator"), "serve",
		"--endpoints", "http://"+etcdAddr, "--node-id", "second",
		"--memcached", "127.0.0.1:"+mcPort, "--http-listen", second)
	testenv.Eventually(t, 60*time.Second, func() bool {
		return strings.Contains(readyz(second), "ok role: standby")
	}, "the second node never stood by (last: %s)", lastReadyz(second))

	// Ctrl-C in terminal 1: the second takes over at once.
	stopped := time.Now()
	ctrlC()
	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(readyz(second), "ok role: leader of term 2, applying")
	}, "the second node never led (last: %s)", lastReadyz(second))
	if took := time.Since(stopped); took >= leaseTTL {
		t.Errorf("the second node led %s after Ctrl-C, not at once (the lease TTL is %s)", took, leaseTTL)
	}
	// ... and goes on leading past two lease TTLs, with etcd and
	// memcached still there.
	until := time.Now().Add(2*leaseTTL + time.Second)
	for time.Now().Before(until) {
		if body := readyz(second); !strings.Contains(body, "ok role: leader of term 2, applying") || !strings.HasPrefix(body, "ok etcd") {
			t.Fatalf("the second node stopped leading %s after the takeover:\n%s", time.Since(stopped), body)
		}
		time.Sleep(100 * time.Millisecond) // the polling interval of a check over time
	}
	if !strings.Contains(out.String(), "keep running for other nodes") {
		t.Errorf("run-dev.sh did not say it keeps etcd and memcached:\n%s", out.String())
	}

	// The second node, then the dev script's etcd and memcached with a
	// second Ctrl-C.
	node2.Stop(30 * time.Second)
	if code := node2.ExitCode(); code != 0 {
		t.Errorf("the second node exited %d", code)
	}
	ctrlC()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("run-dev.sh after a second Ctrl-C: %v", err)
		}
		exited <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Error("run-dev.sh did not stop on a second Ctrl-C")
	}
}
