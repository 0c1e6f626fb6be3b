// Command etcdmember runs one member of an etcd cluster as its own OS
// process, so that fault tests can kill -9, pause and restart members one by
// one. It wraps go.etcd.io/etcd/server/v3/embed with the few settings a
// loopback test cluster needs, prints "etcdmember ready" once the member
// serves, and closes the member cleanly on SIGINT or SIGTERM.
//
//	etcdmember -name m0 -data-dir /tmp/m0 \
//	    -client 127.0.0.1:23790 -peer 127.0.0.1:23800 \
//	    -initial-cluster m0=http://127.0.0.1:23800,m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802
//
// With -advertise-peer the member listens for its peers on -peer but tells
// them to dial another address: a proxy the test can cut.
//
// With -cert-file and -key-file the member serves its clients over TLS
// (https://); -trusted-ca-file with -client-cert-auth also refuses clients
// without a certificate signed by that authority. The peer links stay
// plain: the fault tests cut them in a TCP proxy.
//
// A member restarted on the same data directory rejoins with the state it
// had; the -initial-cluster flag is then ignored, as etcd does.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("etcdmember", flag.ContinueOnError)
	name := fs.String("name", "", "member name (required)")
	dir := fs.String("data-dir", "", "data directory (required)")
	client := fs.String("client", "", "client listen address host:port (required)")
	peer := fs.String("peer", "", "peer listen address host:port (required)")
	advPeer := fs.String("advertise-peer", "", "peer address host:port the other members dial (a proxy in front of -peer, say); default -peer")
	initial := fs.String("initial-cluster", "", "initial cluster: name=http://host:port,... (required)")
	token := fs.String("initial-cluster-token", "faults", "initial cluster token")
	tick := fs.Uint("heartbeat-ms", 100, "heartbeat interval in milliseconds")
	election := fs.Uint("election-ms", 1000, "election timeout in milliseconds")
	logLevel := fs.String("log-level", "error", "etcd log level")
	certFile := fs.String("cert-file", "", "client TLS: the member's certificate (PEM)")
	keyFile := fs.String("key-file", "", "client TLS: the member's key (PEM)")
	trustedCA := fs.String("trusted-ca-file", "", "client TLS: the authority that signs client certificates (PEM)")
	clientCertAuth := fs.Bool("client-cert-auth", false, "refuse clients without a certificate signed by -trusted-ca-file")
	startTimeout := fs.Duration("start-timeout", 2*time.Minute, "how long to wait for the member to serve")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *name == "" || *dir == "" || *client == "" || *peer == "" || *initial == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: etcdmember -name N -data-dir D -client H:P -peer H:P -initial-cluster N=URL,...")
		return 2
	}
	if (*certFile == "") != (*keyFile == "") || (*clientCertAuth != (*trustedCA != "")) || (*clientCertAuth && *certFile == "") {
		fmt.Fprintln(os.Stderr, "etcdmember: -cert-file and -key-file go together; -client-cert-auth needs -trusted-ca-file and -cert-file")
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.LogLevel = *logLevel
	cfg.TickMs = *tick
	cfg.ElectionMs = *election
	cfg.InitialCluster = *initial
	cfg.InitialClusterToken = *token
	cfg.ClusterState = embed.ClusterStateFlagNew
	// Process kills do not lose the page cache, so fsync buys nothing here
	// and costs a lot on a busy test machine.
	cfg.UnsafeNoFsync = true
	// Tests read the whole key history back from revision 1.
	cfg.AutoCompactionRetention = "0"
	cu := url.URL{Scheme: "http", Host: *client}
	if *certFile != "" {
		cu.Scheme = "https"
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: *certFile, KeyFile: *keyFile,
			TrustedCAFile: *trustedCA, ClientCertAuth: *clientCertAuth,
		}
	}
	pu := url.URL{Scheme: "http", Host: *peer}
	apu := pu
	if *advPeer != "" {
		apu.Host = *advPeer
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{apu}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdmember %s: start: %v\n", *name, err)
		return 1
	}
	defer e.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	timer := time.NewTimer(*startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Printf("etcdmember ready name=%s client=%s pid=%d\n", *name, cu.String(), os.Getpid())
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		return 1
	case <-timer.C:
		fmt.Fprintf(os.Stderr, "etcdmember %s: not ready after %s\n", *name, *startTimeout)
		return 1
	case <-ctx.Done():
		return 0
	}
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		return 1
	case <-ctx.Done():
		fmt.Printf("etcdmember %s stopping\n", *name)
		return 0
	}
}
