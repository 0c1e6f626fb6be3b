package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	grpchealth "google.golang.org/grpc/health"

	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// apiOptions are serve's flags of the caller API.
type apiOptions struct {
	listen string
	// httpListen, when set, takes HTTP/JSON off listen, which then serves
	// gRPC through gRPC's own server.
	httpListen string
	cert       string
	key        string
	clientCA   string
	limits     apiserver.Config // the limits and timeouts only

	// stats counts what the limits refused, for the node's metrics.
	stats apiserver.Stats
	// metrics are the API's request metrics, set by start when it serves.
	metrics *apiserver.Metrics
	// tracerProvider traces the API's calls; nil (no OTEL_* variables)
	// traces nothing.
	tracerProvider trace.TracerProvider
}

// collectors are the API's metrics for the node's registry.
func (a *apiOptions) collectors() []prometheus.Collector {
	cs := a.stats.Collectors()
	if a.metrics != nil {
		cs = append(cs, a.metrics.Collectors()...)
	}
	return cs
}

func (a *apiOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&a.listen, "api-listen", "",
		"host:port to serve the caller API on, gRPC and HTTP/JSON on one port; empty serves none. "+
			"Without --api-client-ca anyone who reaches it can act as any name")
	f.StringVar(&a.httpListen, "api-http-listen", "",
		"host:port to serve the HTTP/JSON API on, apart from gRPC; --api-listen then serves gRPC alone, on gRPC's own "+
			"HTTP/2 server, which holds a stream with one goroutine instead of three: for nodes with thousands of "+
			"keep-alive streams (TLS and limits as for --api-listen)")
	f.StringVar(&a.cert, "api-cert", "", "PEM certificate of the API listener (TLS; needs --api-key)")
	f.StringVar(&a.key, "api-key", "", "PEM key of --api-cert")
	f.StringVar(&a.clientCA, "api-client-ca", "",
		"PEM CA bundle that API client certificates must chain to (mTLS); a client may then act only as "+
			"the names its certificate allows: its subject CN and URI SANs "+apiserver.NameURIPrefix+"<name> "+
			"("+apiserver.AllNamesURI+" allows all; a CN of '*' is the name '*')")
	l := &a.limits
	f.IntVar(&l.MaxRegistrations, "api-max-registrations", apiserver.DefaultMaxRegistrations,
		"most live registrations made or kept alive through this node's API")
	f.IntVar(&l.MaxConcurrentCalls, "api-max-calls", apiserver.DefaultMaxConcurrentCalls,
		"most API calls served at once (keep-alive streams and waits not counted)")
	f.IntVar(&l.MaxStreams, "api-max-streams", apiserver.DefaultMaxStreams, "most keep-alive and submit streams held open")
	f.Float64Var(&l.RegisterRate, "api-register-rate", apiserver.DefaultRegisterRate,
		"registrations per second of one caller identity (client certificate, or address)")
	f.IntVar(&l.RegisterBurst, "api-register-burst", apiserver.DefaultRegisterBurst, "registrations one caller identity may make at once")
	f.Float64Var(&l.CallRate, "api-call-rate", apiserver.DefaultCallRate, "calls per second of one caller identity")
	f.IntVar(&l.CallBurst, "api-call-burst", apiserver.DefaultCallBurst, "calls one caller identity may make at once")
	f.DurationVar(&l.ReadTimeout, "api-read-timeout", apiserver.DefaultReadTimeout, "most time to read a request, its body included")
	f.DurationVar(&l.WriteTimeout, "api-write-timeout", apiserver.DefaultWriteTimeout,
		"most time for a call from its request to its answer (waits and keep-alive streams have their own)")
	f.DurationVar(&l.IdleTimeout, "api-idle-timeout", apiserver.DefaultIdleTimeout, "idle time after which a connection is closed")
	f.DurationVar(&l.MaxWait, "api-max-wait", apiserver.DefaultMaxWait, "longest WaitApplied")
	f.DurationVar(&l.MaxConnectionAge, "api-max-connection-age", apiserver.DefaultMaxConnectionAge,
		"age after which a connection is closed gracefully with its next answer (callers reconnect)")
}

func (a *apiOptions) validate() error {
	switch {
	case a.listen == "" && (a.cert != "" || a.key != "" || a.clientCA != "" || a.httpListen != ""):
		return usagef("--api-http-listen, --api-cert, --api-key and --api-client-ca need --api-listen")
	case (a.cert == "") != (a.key == ""):
		return usagef("--api-cert and --api-key go together")
	case a.clientCA != "" && a.cert == "":
		return usagef("--api-client-ca needs --api-cert and --api-key")
	}
	if a.listen != "" {
		if err := validateListen(a.listen); err != nil {
			return usagef("--api-listen: %w", err)
		}
	}
	if a.httpListen != "" {
		if err := validateListen(a.httpListen); err != nil {
			return usagef("--api-http-listen: %w", err)
		}
	}
	cfg := a.limitsConfig(nil)
	if err := cfg.Validate(); err != nil {
		return usagef("an --api-* limit: %w", err)
	}
	return nil
}

// limitsConfig is the API server's config with cli and the limits of the
// flags.
func (a *apiOptions) limitsConfig(cli *clientv3.Client) apiserver.Config {
	cfg := a.limits
	cfg.Etcd, cfg.Stats = cli, &a.stats
	if cli == nil {
		// Validate only: any client will do to pass its nil check.
		cfg.Etcd = &clientv3.Client{}
	}
	return cfg
}

// start serves the API when --api-listen is given (and HTTP/JSON apart on
// --api-http-listen when that is given); stop ends it and waits
// for it. The listener is bound before start returns, so a port in use is
// an error of serve's. insecure reports an API that listens beyond
// loopback without client certificates, which start logs as a warning:
// anyone who reaches it can act as any name.
//
// hs is the API's grpc.health.v1 server, whose statuses the node's health
// checker sets.
func (a *apiOptions) start(ctx context.Context, cli *clientv3.Client, namespace string, limits ops.Limits, hs *grpchealth.Server, log *slog.Logger) (stop func(), insecure bool, err error) {
	if a.listen == "" {
		return func() {}, false, nil
	}
	cfg := a.limitsConfig(cli)
	a.metrics = apiserver.NewMetrics()
	cfg.Namespace, cfg.Limits, cfg.Logger, cfg.Health, cfg.Metrics = namespace, limits, log, hs, a.metrics
	cfg.TracerProvider = a.tracerProvider
	if a.cert != "" {
		// Reloading: a rotated certificate, key or client CA takes effect
		// for new connections without a restart.
		tlsCfg, err := apiserver.TLSFiles{CertFile: a.cert, KeyFile: a.key, ClientCAFile: a.clientCA}.Reloading()
		if err != nil {
			return nil, false, err
		}
		cfg.TLS, cfg.AuthorizeNames = tlsCfg, a.clientCA != ""
	}
	srv, err := apiserver.New(cfg)
	if err != nil {
		return nil, false, err
	}
	lis, err := net.Listen("tcp", a.listen)
	if err != nil {
		return nil, false, fmt.Errorf("--api-listen: %w", err)
	}
	listeners := []net.Listener{lis}
	serve := []func(context.Context, net.Listener) error{srv.Serve}
	if a.httpListen != "" {
		hlis, err := net.Listen("tcp", a.httpListen)
		if err != nil {
			lis.Close()
			return nil, false, fmt.Errorf("--api-http-listen: %w", err)
		}
		listeners = append(listeners, hlis)
		serve = []func(context.Context, net.Listener) error{srv.ServeGRPC, srv.ServeJSON}
		log.Info("caller API listening", "grpc_addr", lis.Addr().String(), "http_addr", hlis.Addr().String(),
			"tls", cfg.TLS != nil, "authorize_names", cfg.AuthorizeNames)
	} else {
		log.Info("caller API listening", "addr", lis.Addr().String(), "tls", cfg.TLS != nil, "authorize_names", cfg.AuthorizeNames)
	}
	for _, l := range listeners {
		insecure = insecure || (!cfg.AuthorizeNames && !loopbackOnly(l.Addr()))
	}
	if insecure {
		log.Warn("caller API listens beyond loopback without client certificates: anyone who reaches it can register, "+
			"submit and unregister as any name; give --api-client-ca, or listen on loopback or a private network only",
			"addr", lis.Addr().String())
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, l := range listeners {
		wg.Go(func() {
			if err := serve[i](sctx, l); err != nil {
				log.Error("caller API stopped", "addr", l.Addr().String(), "err", err)
			}
		})
	}
	return func() { cancel(); wg.Wait() }, insecure, nil
}

// loopbackOnly reports whether addr, a bound listener's address, is
// reachable from this machine only. An unspecified address (0.0.0.0, ::,
// an empty host) listens on every interface.
func loopbackOnly(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
