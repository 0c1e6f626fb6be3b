package faults

import (
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
)

// TestNodeWithWrongCertificate runs etcd with TLS and client-certificate
// authentication, the nodes and callers with certificates of the cluster's
// authority, and starts one more node whose certificate another authority
// signed. That node must fail at once and say why (a TLS error naming the
// certificate), never lead, and leave the others as they were: the same
// leader in the same term, making progress.
//
// A leader whose lease renewals are late steps down, as it must, and a
// busy machine alone can delay them past the suite's 2s leases (renewals
// 1.6s apart were seen under load): the term would end for no fault of
// the stranger or of the nodes. The nodes here
// hold a lease as long as the scenario may last (setup.timeout), so within
// it a term ends only by an act (a resignation, a deleted leader key, a
// revoked lease, a node gone), which is what the stranger must not cause.
// Nothing in this scenario waits for a lease to run out.
func TestNodeWithWrongCertificate(t *testing.T) {
	s := start(t, "wrong-certificate", setup{tls: true, leaseTTL: scenarioTimeout})
	_, before := s.leader()
	stranger := testcerts.NewCA(t, "stranger").Client("node")
	var servers []string
	for _, sv := range s.c.Ring.Servers() {
		servers = append(servers, sv.Addr)
	}
	const id = "node-stranger"
	i := s.fault("bad-certificate", id, "client certificate signed by another authority")
	p := harness.Start(t, id, harness.Binary(t), "serve", "--node-id", id,
		"--memcached", strings.Join(servers, ","), "--namespace", s.c.Namespace,
		"--lease-ttl", "2s", "--log-level", "debug", "--dial-timeout", "2s",
		"--endpoints", s.c.Members[0].Endpoint(),
		"--cacert", s.c.Certs.CA.CertFile, "--cert", stranger.CertFile, "--key", stranger.KeyFile)
	ctx, cancel := s.timeout()
	defer cancel()
	select {
	case <-p.Exited():
	case <-ctx.Done():
		s.fatalf("the node with a certificate of another authority still runs:\n%s", p.Output())
	}
	s.healed(i)
	out := p.Output()
	t.Logf("%s exited with status %d:\n%s", id, p.ExitCode(), out)
	if p.ExitCode() != 1 {
		s.t.Errorf("%s exited with status %d, want 1", id, p.ExitCode())
	}
	for _, want := range []string{"TLS", "certificate"} {
		if !strings.Contains(out, want) {
			s.t.Errorf("%s's output does not name the TLS error (no %q)", id, want)
		}
	}
	if strings.Contains(out, `msg="became leader"`) {
		s.t.Errorf("%s led", id)
	}
	s.progress(40)
	n, after := s.leader()
	if after.Term != before.Term || after.Leader != before.Leader {
		s.t.Errorf("leadership changed while %s failed: %s term %d, was %s term %d", id, n.ID, after.Term, before.Leader, before.Term)
	}
	s.finish()
}
