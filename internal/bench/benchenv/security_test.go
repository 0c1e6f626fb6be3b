package benchenv

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// A child node gets the run's TLS files and user as flags, and the
// password through the environment only.
func TestChildGetsTheSecuritySettings(t *testing.T) {
	var args []string
	var cmd *exec.Cmd
	e := &Env{Endpoints: []string{"https://etcd:2379"}, Namespace: "bench-x", cfg: Config{
		Security: etcdconn.Security{CACert: "ca.pem", Cert: "c.pem", Key: "k.pem", Username: "bench", Password: "pw-secret"},
		Serve: func(a []string) *exec.Cmd {
			args = a
			cmd = exec.Command("true")
			return cmd
		},
	}}
	c, err := e.StartChild("n1")
	if err != nil {
		t.Fatal(err)
	}
	<-c.done
	e.StopChildren()
	line := strings.Join(args, " ")
	for _, want := range []string{"--cacert ca.pem", "--cert c.pem", "--key k.pem", "--user bench"} {
		if !strings.Contains(line, want) {
			t.Errorf("child args %q lack %q", line, want)
		}
	}
	if strings.Contains(line, "pw-secret") {
		t.Errorf("child args hold the password: %q", line)
	}
	if !slices.Contains(cmd.Env, "COORDINATOR_PASSWORD=pw-secret") {
		t.Errorf("child environment lacks the password")
	}
}
