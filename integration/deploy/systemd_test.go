// Package deploy tests the deployment material in deploy/: that the systemd
// unit is one systemd accepts, and that it and its environment file only
// use flags and variables the binary has.
package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

const (
	unitPath = "../../deploy/systemd/coordinator.service"
	envPath  = "../../deploy/systemd/coordinator.env"
	// installedBinary and installedEnv are where the unit expects them.
	installedBinary = "/usr/local/bin/coordinator"
	installedEnv    = "/etc/coordinator/coordinator.env"
)

// unit is a parsed unit file: section, key, values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// TestSystemdUnit: systemd-analyze verify finds nothing to say about the
// unit (with its paths pointed at a built binary and the example
// environment file), the unit runs `coordinator serve` with flags the
// binary accepts, and stops it with SIGTERM, which makes a leader resign.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, unitPath)
	svc := u["Service"]
	if svc == nil || u["Unit"] == nil || u["Install"] == nil {
		t.Fatalf("unit lacks a [Unit], [Service] or [Install] section: %v", u)
	}
	exec0 := svc["ExecStart"]
	if len(exec0) != 1 {
		t.Fatalf("ExecStart = %q, want one", exec0)
	}
	argv := strings.Fields(exec0[0])
	if len(argv) < 2 || argv[0] != installedBinary || argv[1] != "serve" {
		t.Fatalf("ExecStart = %q, want %s serve ...", exec0[0], installedBinary)
	}
	if got := svc["KillSignal"]; len(got) != 1 || got[0] != "SIGTERM" {
		t.Errorf("KillSignal = %q, want SIGTERM", got)
	}
	if got := svc["EnvironmentFile"]; len(got) != 1 || got[0] != installedEnv {
		t.Errorf("EnvironmentFile = %q, want %s", got, installedEnv)
	}

	bin := harness.Binary(t)
	// The flags of ExecStart, with systemd's %l (short host name) filled
	// in, parse: --help runs only when the flags do.
	args := []string{"serve"}
	for _, a := range argv[2:] {
		args = append(args, strings.ReplaceAll(a, "%l", "host-1"))
	}
	if out, errOut, code := harness.Run(t, nil, append(args, "--help")...); code != 0 {
		t.Errorf("the unit's flags do not parse: exit %d\n%s%s", code, out, errOut)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit was only parsed")
		return
	}
	dir := t.TempDir()
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	envCopy := filepath.Join(dir, "coordinator.env")
	copyFile(t, envPath, envCopy)
	local := strings.NewReplacer(installedBinary, bin, installedEnv, envCopy).Replace(string(data))
	unitCopy := filepath.Join(dir, "coordinator.service")
	if err := os.WriteFile(unitCopy, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 even for unknown keys and bad values, which it only
	// reports: any output at all is a finding.
	cmd := exec.Command(analyze, "verify", "--man=no", unitCopy)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdEnvironmentFile: every variable the example environment file
// sets, or shows commented out, is one the binary reads: serve --help names
// it.
func TestSystemdEnvironmentFile(t *testing.T) {
	data, err := os.ReadFile(envPath)
	if err != nil {
		t.Fatal(err)
	}
	help, errOut, code := harness.Run(t, nil, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d: %s", code, errOut)
	}
	assign := regexp.MustCompile(`^#?(COORDINATOR_[A-Z0-9_]+)=`)
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		m := assign.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		seen++
		if !strings.Contains(help, "[$"+m[1]+"]") {
			t.Errorf("%s sets %s, which no flag of serve reads", envPath, m[1])
		}
	}
	if seen == 0 {
		t.Fatalf("%s sets no COORDINATOR_ variable", envPath)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
