package rbac_test

import (
	"slices"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/rbac"
)

func TestEtcdctlCommands(t *testing.T) {
	l := keyspace.MustNew("prod")
	got := rbac.EtcdctlCommands("caller-agent-7", rbac.CallerPermissions(l, "agent-7"))
	want := []string{
		"etcdctl role add caller-agent-7",
		"etcdctl role grant-permission caller-agent-7 readwrite /coordinator/prod/reg/agent-7",
		"etcdctl role grant-permission --prefix=true caller-agent-7 readwrite /coordinator/prod/ops/agent-7/",
		"etcdctl role grant-permission --prefix=true caller-agent-7 readwrite /coordinator/prod/receipts/agent-7/",
		"etcdctl role grant-permission caller-agent-7 read /coordinator/prod/applied",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	node := rbac.EtcdctlCommands("coordinator-node", rbac.NodePermissions(l))
	if node[1] != "etcdctl role grant-permission --prefix=true coordinator-node readwrite /coordinator/prod/" {
		t.Fatalf("node: %q", node)
	}
	// A name with characters the shell would read is quoted.
	odd := rbac.EtcdctlCommands("r", rbac.CallerPermissions(l, "a$b"))
	if odd[1] != "etcdctl role grant-permission r readwrite '/coordinator/prod/reg/a$b'" {
		t.Fatalf("odd: %q", odd[1])
	}
}

// A caller's prefixes end with a slash, so that agent-7's permissions do
// not cover agent-70's keys.
func TestCallerPrefixesEndAtTheName(t *testing.T) {
	l := keyspace.MustNew("default")
	for _, p := range rbac.CallerPermissions(l, "agent-7") {
		if p.Prefix && p.Key[len(p.Key)-1] != '/' {
			t.Errorf("prefix %q does not end with /", p.Key)
		}
	}
}
