package apiserver

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
)

// Collectors returns the metrics of st, read when scraped, for a node's
// registry: what the limits refused, by limit, and the streams,
// registrations and kept-alive leases the node holds.
func (st *Stats) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&limitedCollector{st}, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "coordinator", Name: "api_streams", Help: "Keep-alive and submit streams the caller API holds open.",
	}, func() float64 { return float64(st.Streams.Load()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "coordinator", Name: "api_registrations",
		Help: "Live registrations made or kept alive through this node's caller API.",
	}, func() float64 { return float64(st.Registrations.Load()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "coordinator", Name: "api_kept_alive",
		Help: "Registrations whose leases this node's keep-alive streams (KeepAlive, KeepAliveMany) keep alive.",
	}, func() float64 { return float64(st.KeptAlive.Load()) })}
}

// limitedDesc is coordinator_api_limited_total{limit}.
var limitedDesc = prometheus.NewDesc("coordinator_api_limited_total",
	"Caller API calls refused RESOURCE_EXHAUSTED, by the limit that refused them.", []string{"limit"}, nil)

// limitedCollector reads the refusal counters of Stats.
type limitedCollector struct{ st *Stats }

// Describe sends the one descriptor.
func (c *limitedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- limitedDesc }

// Collect sends one counter per limit.
func (c *limitedCollector) Collect(ch chan<- prometheus.Metric) {
	for limit, n := range map[string]uint64{
		"rate":          c.st.RateLimited.Load(),
		"calls":         c.st.TooManyCalls.Load(),
		"streams":       c.st.TooManyStreams.Load(),
		"registrations": c.st.TooManyRegistrations.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(limitedDesc, prometheus.CounterValue, float64(n), limit)
	}
}

// Metrics are a Server's request metrics: gRPC's per method
// (go-grpc-middleware's Prometheus provider: grpc_server_started_total,
// grpc_server_handled_total{grpc_code}, grpc_server_msg_received_total,
// grpc_server_msg_sent_total, grpc_server_handling_seconds) and the
// HTTP/JSON gateway's per route (coordinator_api_http_requests_total,
// coordinator_api_http_request_duration_seconds). Make them with
// NewMetrics; register Collectors on a node's registry.
type Metrics struct {
	grpc     *grpcprom.ServerMetrics
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics returns request metrics for one Server (Config.Metrics).
func NewMetrics() *Metrics {
	return &Metrics{
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(requestBuckets))),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coordinator", Name: "api_http_requests_total",
			Help: "HTTP/JSON requests of the caller API answered, by method, route (other for a path with no route) and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coordinator", Name: "api_http_request_duration_seconds",
			Help:    "Time to answer an HTTP/JSON request of the caller API, by method and route.",
			Buckets: requestBuckets,
		}, []string{"method", "route"}),
	}
}

// requestBuckets spans 1 ms to about 65 s, quadrupling: calls answer in
// milliseconds, waits for a token take up to their deadline.
var requestBuckets = prometheus.ExponentialBuckets(0.001, 4, 9)

// Collectors returns the metrics' collectors.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.grpc, m.requests, m.duration}
}

// grpcOptions returns the gRPC server's interceptors; none for nil m.
func (m *Metrics) grpcOptions() []grpc.ServerOption {
	if m == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.grpc.StreamServerInterceptor()),
	}
}

// initialize makes every method of gs show in the gRPC metrics at zero,
// so that rules on them have series before the first call.
func (m *Metrics) initialize(gs *grpc.Server) {
	if m != nil {
		m.grpc.InitializeMetrics(gs)
	}
}

// instrument counts and times the HTTP requests h answers; h itself for nil
// m.
func (m *Metrics) instrument(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	for route := range httpRoutes() {
		m.duration.WithLabelValues(http.MethodGet, route)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		route := r.URL.Path
		if !httpRoutes()[route] {
			route = "other"
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		default:
			method = "other" // bounded label values
		}
		m.requests.WithLabelValues(method, route, strconv.Itoa(rec.code)).Inc()
		m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
	})
}

// httpRoutes are the paths of the HTTP/JSON API's routes, from its OpenAPI
// document (none of them has path parameters), and OpenAPIPath.
var httpRoutes = sync.OnceValue(func() map[string]bool {
	var doc struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	routes := map[string]bool{OpenAPIPath: true}
	if err := json.Unmarshal(pb.OpenAPI, &doc); err == nil {
		for p := range doc.Paths {
			routes[p] = true
		}
	}
	return routes
})

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.written {
		s.code, s.written = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.written = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer (for
// deadlines and flushes).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush flushes the response, for handlers that test for http.Flusher.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
