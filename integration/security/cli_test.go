package security

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// tlsFlags are the flags of a process with pair's certificate.
func (e *tlsEtcd) tlsFlags(pair testcerts.Pair) []string {
	return []string{
		"--endpoints", strings.Join(e.srv.Endpoints(), ","),
		"--cacert", e.ca.CertFile, "--cert", pair.CertFile, "--key", pair.KeyFile,
	}
}

// runCLI runs the binary and returns its output and exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return harness.Run(t, nil, args...)
}

func runCLIOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("coordinator %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

type submitOut struct {
	Token   string `json:"token"`
	Name    string `json:"name"`
	Applied bool   `json:"applied"`
}

type statusOut struct {
	Leader string `json:"leader"`
}

// startServe runs `coordinator serve` with flags and waits until it leads.
func startServe(t *testing.T, mc string, flags []string, status []string) *harness.Node {
	t.Helper()
	n := harness.StartNode(t, harness.NodeOptions{ID: "node-a", Memcached: mc, Extra: flags})
	testenv.Eventually(t, 30*time.Second, func() bool {
		out, _, code := runCLI(t, append([]string{"status", "-o", "json"}, status...)...)
		var st statusOut
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Leader == "node-a"
	}, "node-a never led; its output:\n%s", n.Output())
	return n
}

// TestCLIOverTLS: serve, submit --wait and status work with --cacert,
// --cert and --key against an etcd that wants client certificates; the
// wrong files fail with a clear error, and bad combinations are usage
// errors naming the flag.
func TestCLIOverTLS(t *testing.T) {
	e := startTLSEtcd(t)
	mc := testenv.StartMemcached(t)
	nodeFlags := e.tlsFlags(e.ca.Client("node"))
	cliFlags := e.tlsFlags(e.ca.Client("cli"))
	startServe(t, mc.Addr, nodeFlags, cliFlags)

	var set submitOut
	out := runCLIOK(t, append([]string{"submit", "--as", "cli-writer", "set", "greeting", "over tls", "--wait", "-o", "json"}, cliFlags...)...)
	if err := json.Unmarshal([]byte(out), &set); err != nil || !set.Applied {
		t.Fatalf("submit output %q (%v): want applied", out, err)
	}
	if got := memcachedValue(t, mc.Addr, "greeting"); got != "over tls" {
		t.Fatalf("memcached has %q, want %q", got, "over tls")
	}
	runCLIOK(t, append([]string{"status"}, cliFlags...)...)
	runCLIOK(t, append([]string{"registrations"}, cliFlags...)...)
	runCLIOK(t, append([]string{"ops"}, cliFlags...)...)

	other := testcerts.NewCA(t, "other")
	stranger := other.Client("cli")
	client := e.ca.Client("cli2")
	plain := strings.Replace(e.srv.Endpoints()[0], "https://", "http://", 1)
	missing := filepath.Join(t.TempDir(), "absent.pem")
	for _, tc := range []struct {
		name  string
		flags []string
		code  int
		says  []string
	}{
		{"no CA", []string{"--endpoints", e.srv.Endpoints()[0], "--cert", client.CertFile, "--key", client.KeyFile},
			1, []string{"TLS", "x509"}},
		{"cert of another CA", []string{"--endpoints", e.srv.Endpoints()[0], "--cacert", e.ca.CertFile,
			"--cert", stranger.CertFile, "--key", stranger.KeyFile}, 1, []string{"TLS", "unknown certificate authority"}},
		{"plain http", []string{"--endpoints", plain}, 1, []string{"TLS", "https://"}},
		{"cert without key", []string{"--endpoints", e.srv.Endpoints()[0], "--cacert", e.ca.CertFile,
			"--cert", client.CertFile}, 2, []string{"--key"}},
		{"key without cert", []string{"--endpoints", e.srv.Endpoints()[0], "--cacert", e.ca.CertFile,
			"--key", client.KeyFile}, 2, []string{"--cert"}},
		{"unreadable CA", []string{"--endpoints", e.srv.Endpoints()[0], "--cacert", missing,
			"--cert", client.CertFile, "--key", client.KeyFile}, 2, []string{"--cacert", missing}},
		{"TLS files with http", []string{"--endpoints", plain, "--cacert", e.ca.CertFile,
			"--cert", client.CertFile, "--key", client.KeyFile}, 2, []string{"--endpoints", "https://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"status", "--dial-timeout", "2s"}, tc.flags...)
			out, errOut, code := runCLI(t, args...)
			t.Logf("stderr: %s", errOut)
			if code != tc.code {
				t.Fatalf("coordinator %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, tc.code, out, errOut)
			}
			for _, s := range tc.says {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr does not say %q:\n%s", s, errOut)
				}
			}
		})
	}
	// serve with the wrong files stops with the same error.
	_, errOut, code := runCLI(t, "serve", "--node-id", "node-b", "--memcached", mc.Addr,
		"--endpoints", e.srv.Endpoints()[0], "--dial-timeout", "2s")
	if code != 1 || !strings.Contains(errOut, "TLS") {
		t.Fatalf("serve without certificates: exit %d, stderr:\n%s", code, errOut)
	}
}

// TestCLIUser: --user name:password and --user name --password work
// against an etcd with auth on; the wrong password is refused, no output
// holds a password, and neither does the command line a node serves on
// /debug/pprof/cmdline.
func TestCLIUser(t *testing.T) {
	e := startTLSEtcd(t)
	enableAuth(t, dial(t, e.conn(e.root)))
	mc := testenv.StartMemcached(t)
	// The certificates' common names name users without permissions:
	// the user of --user is who etcd takes.
	certFlags := e.tlsFlags(e.ca.Client("nobody"))
	httpAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	nodeFlags := append(append([]string{}, certFlags...), "--user", nodeUser, "--password", password,
		"--http-listen", httpAddr, "--enable-pprof")
	n := startServe(t, mc.Addr, nodeFlags, append(append([]string{}, certFlags...), "--user", "root:"+password))

	// pprof serves the node's command line without the password.
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/debug/pprof/cmdline: %d %v", resp.StatusCode, err)
	}
	if strings.Contains(string(cmdline), password) || !strings.Contains(string(cmdline), "--password\x00REDACTED\x00") {
		t.Fatalf("/debug/pprof/cmdline = %q: want --password REDACTED and not the password", cmdline)
	}

	out := runCLIOK(t, append([]string{"submit", "--as", "agent-7", "set", "k7", "by password", "--wait", "-o", "json",
		"--user", "agent-7:" + password}, certFlags...)...)
	var set submitOut
	if err := json.Unmarshal([]byte(out), &set); err != nil || !set.Applied {
		t.Fatalf("submit output %q (%v): want applied", out, err)
	}
	if got := memcachedValue(t, mc.Addr, "k7"); got != "by password" {
		t.Fatalf("memcached has %q, want %q", got, "by password")
	}

	// agent-7 may not submit as agent-8.
	args := append([]string{"submit", "--as", "agent-8", "set", "k8", "forged", "--user", "agent-7", "--password", password}, certFlags...)
	_, errOut, code := runCLI(t, args...)
	t.Logf("submit as agent-8 by agent-7: %s", errOut)
	if code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("submit as agent-8 by agent-7: exit %d, want 1 with permission denied; stderr:\n%s", code, errOut)
	}

	// The password from the environment, as bench hands it to its nodes.
	envRun := exec.Command(harness.Binary(t), append([]string{"status", "--user", "root"}, certFlags...)...)
	envRun.Env = append(os.Environ(), "COORDINATOR_PASSWORD="+password)
	if out, err := envRun.CombinedOutput(); err != nil {
		t.Fatalf("status with the password in COORDINATOR_PASSWORD: %v\n%s", err, out)
	}

	wrong := "wrong-" + password
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"wrong password", []string{"status", "--user", "agent-7:" + wrong}, 1, "refused"},
		{"no password", []string{"status", "--user", "agent-7"}, 2, "--password"},
		{"password without user", []string{"status", "--password", wrong}, 2, "--user"},
		{"password twice", []string{"status", "--user", "agent-7:" + wrong, "--password", wrong}, 2, "--password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, append(tc.args, certFlags...)...)
			t.Logf("stderr: %s", errOut)
			if code != tc.code || !strings.Contains(errOut, tc.says) {
				t.Fatalf("exit %d, want %d saying %q; stderr:\n%s", code, tc.code, tc.says, errOut)
			}
			if strings.Contains(out+errOut, wrong) || strings.Contains(out+errOut, password) {
				t.Fatalf("output holds the password:\n%s\n%s", out, errOut)
			}
		})
	}
	if strings.Contains(n.Output(), password) {
		t.Fatalf("serve's log holds the password:\n%s", n.Output())
	}
}

// TestCLIPasswordFile: --password-file and COORDINATOR_PASSWORD_FILE give
// the password against an etcd with auth on; a file with the wrong one is
// refused as a wrong password is; a password given two ways is misuse; no
// output holds a password. (etcd checks passwords with bcrypt, slow under
// the race detector: the dial timeout leaves room for it.)
func TestCLIPasswordFile(t *testing.T) {
	e := startTLSEtcd(t)
	enableAuth(t, dial(t, e.conn(e.root)))
	flags := append(e.tlsFlags(e.ca.Client("nobody")), "--dial-timeout", "30s")
	dir := t.TempDir()
	pwFile, wrongFile := filepath.Join(dir, "password"), filepath.Join(dir, "wrong")
	wrong := "wrong-" + password
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noPassword := func(t *testing.T, out string) {
		t.Helper()
		if strings.Contains(out, password) || strings.Contains(out, wrong) {
			t.Fatalf("output holds the password:\n%s", out)
		}
	}
	out, errOut, code := runCLI(t, append([]string{"status", "--user", "root", "--password-file", pwFile}, flags...)...)
	if code != 0 {
		t.Fatalf("status with --password-file: exit %d\n%s", code, errOut)
	}
	noPassword(t, out+errOut)
	envRun := exec.Command(harness.Binary(t), append([]string{"status", "--user", "root"}, flags...)...)
	envRun.Env = append(os.Environ(), "COORDINATOR_PASSWORD_FILE="+pwFile)
	envOut, err := envRun.CombinedOutput()
	if err != nil {
		t.Fatalf("status with COORDINATOR_PASSWORD_FILE: %v\n%s", err, envOut)
	}
	noPassword(t, string(envOut))

	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"wrong password file", []string{"status", "--user", "root", "--password-file", wrongFile}, 1, "refused"},
		{"password file and password", []string{"status", "--user", "root", "--password-file", pwFile, "--password", wrong},
			2, "--password-file and --password"},
		{"password file and user's password", []string{"status", "--user", "root:" + wrong, "--password-file", pwFile},
			2, "--password-file"},
		{"password file without user", []string{"status", "--password-file", pwFile}, 2, "--password-file needs --user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, append(tc.args, flags...)...)
			t.Logf("stderr: %s", errOut)
			if code != tc.code || !strings.Contains(errOut, tc.says) {
				t.Fatalf("exit %d, want %d saying %q; stderr:\n%s", code, tc.code, tc.says, errOut)
			}
			noPassword(t, out+errOut)
		})
	}
}
