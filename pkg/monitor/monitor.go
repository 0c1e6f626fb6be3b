// Package monitor serves a node's observability over HTTP: /metrics
// (Prometheus); the probes /livez, /healthz, /readyz, /readyz/api and
// /readyz/applier (200 or 503, with one line per check saying why); and,
// only when enabled, Go's profiler under /debug/pprof/.
//
// The probes have the meanings platforms give them: /livez fails only when
// the process is wedged (restart it), /readyz/api when the node cannot take
// callers' calls (route callers elsewhere), /readyz/applier (and /readyz,
// the same checks) when the node can neither apply nor take over at once.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/health"
)

// DefaultShutdownTimeout bounds how long Serve waits for requests under way
// once its context ends.
const DefaultShutdownTimeout = 5 * time.Second

// Checks is what the probes report (a *health.Checker): Live on /livez,
// Health on /healthz, Ready on /readyz and /readyz/applier, APIReady on
// /readyz/api.
type Checks interface {
	Live() health.Report
	Health() health.Report
	Ready() health.Report
	APIReady() health.Report
}

// Config configures a monitor. Zero values mean the defaults noted.
type Config struct {
	// Addr is the host:port to listen on ("127.0.0.1:9090"; port 0 picks a
	// free one, see Server.Addr). Ignored when Listener is set.
	Addr string
	// Listener, when set, is the listener served; Serve closes it.
	Listener net.Listener
	// EnablePprof serves net/http/pprof under /debug/pprof/; off, those
	// paths are 404.
	EnablePprof bool
	// Gatherer is served on /metrics; nil serves 404 there.
	Gatherer prometheus.Gatherer
	// Checks answer the probes; nil serves 404 there.
	Checks Checks
	// Logger receives the server's errors; nil means slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout bounds the wait for requests under way when Serve's
	// context ends; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Listener == nil && c.Addr == "":
		return config.Errorf("monitor", "Addr", "is empty")
	case c.ShutdownTimeout < 0:
		return config.Errorf("monitor", "ShutdownTimeout", "%s is negative", c.ShutdownTimeout)
	}
	if c.Listener == nil {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return config.Errorf("monitor", "Addr", "%q: %w", c.Addr, err)
		}
	}
	return nil
}

// Server is a monitor bound to its address.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
}

// Listen binds cfg's address and returns the server, which answers once
// Serve is called; its error is a *config.FieldError for a bad cfg.
func Listen(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("monitor: listen on %s: %w", cfg.Addr, err)
		}
	}
	s := &Server{cfg: cfg, ln: ln}
	s.srv = &http.Server{
		Handler:           Handler(cfg),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends, then shuts down (waiting at most
// ShutdownTimeout for requests under way) and returns nil; it returns the
// error that stopped it otherwise. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("monitor: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("monitor: shut down: %w", err)
	}
	return nil
}

// Handler returns the monitor's routes for cfg, for callers that serve
// them themselves.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	if cfg.Checks != nil {
		mux.Handle("GET /livez", reportHandler(cfg.Checks.Live))
		mux.Handle("GET /healthz", reportHandler(cfg.Checks.Health))
		mux.Handle("GET /readyz", reportHandler(cfg.Checks.Ready))
		mux.Handle("GET /readyz/api", reportHandler(cfg.Checks.APIReady))
		mux.Handle("GET /readyz/applier", reportHandler(cfg.Checks.Ready))
	}
	if cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// reportHandler answers 200 when the report passes and 503 when it does
// not, with the report's lines as a plain-text body.
func reportHandler(check func() health.Report) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r := check()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !r.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(r.String()))
	})
}
