package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// apiOptions are serve's flags of the caller API.
type apiOptions struct {
	listen   string
	cert     string
	key      string
	clientCA string
}

func (a *apiOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&a.listen, "api-listen", "",
		"host:port to serve the caller API on, gRPC and HTTP/JSON on one port; empty serves none. "+
			"Without --api-client-ca anyone who reaches it can act as any name")
	f.StringVar(&a.cert, "api-cert", "", "PEM certificate of the API listener (TLS; needs --api-key)")
	f.StringVar(&a.key, "api-key", "", "PEM key of --api-cert")
	f.StringVar(&a.clientCA, "api-client-ca", "",
		"PEM CA bundle that API client certificates must chain to (mTLS); a client may then act only as "+
			"the names its certificate allows: its subject CN and URI SANs "+apiserver.NameURIPrefix+"<name> ('*' for all)")
}

func (a *apiOptions) validate() error {
	switch {
	case a.listen == "" && (a.cert != "" || a.key != "" || a.clientCA != ""):
		return usagef("--api-cert, --api-key and --api-client-ca need --api-listen")
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
	return nil
}

// start serves the API when --api-listen is given; stop ends it and waits
// for it. The listener is bound before start returns, so a port in use is
// an error of serve's.
func (a *apiOptions) start(ctx context.Context, cli *clientv3.Client, namespace string, limits ops.Limits, log *slog.Logger) (stop func(), err error) {
	if a.listen == "" {
		return func() {}, nil
	}
	cfg := apiserver.Config{Etcd: cli, Namespace: namespace, Limits: limits, Logger: log}
	if a.cert != "" {
		tlsCfg, err := apiserver.TLSFiles{CertFile: a.cert, KeyFile: a.key, ClientCAFile: a.clientCA}.Load()
		if err != nil {
			return nil, err
		}
		cfg.TLS, cfg.AuthorizeNames = tlsCfg, a.clientCA != ""
	}
	srv, err := apiserver.New(cfg)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", a.listen)
	if err != nil {
		return nil, fmt.Errorf("--api-listen: %w", err)
	}
	log.Info("caller API listening", "addr", lis.Addr().String(), "tls", cfg.TLS != nil, "authorize_names", cfg.AuthorizeNames)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(sctx, lis); err != nil {
			log.Error("caller API stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
