package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// streamAPI serves cfg (its etcd and namespace filled in) on a loopback
// port and returns the server, a plain gRPC client of it and the etcd
// client.
func streamAPI(t *testing.T, cfg Config) (*Server, pb.CoordinatorClient, *clientv3.Client) {
	t.Helper()
	return streamAPIWith(t, cfg, servings[0])
}

// streamAPIWith is streamAPI served through how.
func streamAPIWith(t *testing.T, cfg Config, how serving) (*Server, pb.CoordinatorClient, *clientv3.Client) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	cfg.Etcd = cli
	if cfg.Namespace == "" {
		cfg.Namespace = "stream"
	}
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(serveLoopbackWith(t, s, how), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, pb.NewCoordinatorClient(conn), cli
}

// resultsOf sends reqs in one message on stream, request ids 1 to
// len(reqs), and returns the results by request id once each is answered.
func resultsOf(t *testing.T, stream pb.Coordinator_SubmitStreamClient, reqs ...*pb.SubmitRequest) map[uint64]*pb.StreamResult {
	t.Helper()
	msg := &pb.SubmitStreamRequest{}
	for i, r := range reqs {
		msg.Submissions = append(msg.Submissions, &pb.StreamSubmission{RequestId: uint64(i + 1), Submit: r})
	}
	if err := stream.Send(msg); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*pb.StreamResult{}
	for len(got) < len(reqs) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d results: %v", len(got), len(reqs), err)
		}
		for _, r := range resp.GetResults() {
			if got[r.GetRequestId()] != nil {
				t.Fatalf("request %d answered twice", r.GetRequestId())
			}
			got[r.GetRequestId()] = r
		}
	}
	return got
}

// resultErr is the error of a result as a client sees it, nil when it was
// accepted.
func resultErr(r *pb.StreamResult) error {
	e := r.GetError()
	if e == nil {
		return nil
	}
	st := &spb.Status{Code: e.GetCode(), Message: e.GetMessage()}
	for _, d := range e.GetDetails() {
		st.Details = append(st.Details, &anypb.Any{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()})
	}
	return status.ErrorProto(st)
}

// sameStatus reports whether a and b are the same status: code, message,
// and details (compared unpacked: an ErrorInfo's metadata is a map, which
// serializes in any order).
func sameStatus(a, b error) bool {
	sa, sb := status.Convert(a), status.Convert(b)
	da, db := sa.Details(), sb.Details()
	if sa.Code() != sb.Code() || sa.Message() != sb.Message() || len(da) != len(db) {
		return false
	}
	for i := range da {
		ma, ok := da[i].(proto.Message)
		mb, ok2 := db[i].(proto.Message)
		if !ok || !ok2 || !proto.Equal(ma, mb) {
			return false
		}
	}
	return true
}

// setOp is a set of key to v.
func setOp(key, v string) []*pb.Op {
	return []*pb.Op{{Op: &pb.Op_Set{Set: &pb.SetOp{Key: key, Data: &pb.SetOp_Text{Text: v}}}}}
}

// Every submission on a stream is answered once, by its request id, as a
// Submit call is: accepted ones with a token, each refusal with the very
// status (code, reason, message, details) Submit answers for the same
// request, and the stream goes on after a refusal. A resent batch id gets
// the first acceptance's token. The stream ends OK once the caller closes
// its side.
func TestSubmitStreamAnswersEachSubmissionAsSubmitDoes(t *testing.T) {
	s, api, cli := streamAPI(t, Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	reg := func(name string) *pb.RegisterResponse {
		t.Helper()
		r, err := api.Register(ctx, &pb.RegisterRequest{Name: name, TtlSeconds: 30})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := reg("a"), reg("b")
	old := reg("c")
	reg("c") // supersedes old
	gone := reg("d")
	if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "d", Incarnation: gone.Incarnation, LeaseId: gone.LeaseId}); err != nil {
		t.Fatal(err)
	}

	refused := map[string]*pb.SubmitRequest{
		"bad key":            {Name: "a", Incarnation: a.Incarnation, Ops: setOp("bad key", "x")},
		"no ops":             {Name: "a", Incarnation: a.Incarnation},
		"no incarnation":     {Name: "a", Ops: setOp("k", "x")},
		"bad name":           {Name: "a/b", Incarnation: 1, Ops: setOp("k", "x")},
		"superseded":         {Name: "c", Incarnation: old.Incarnation, Ops: setOp("k", "x")},
		"expired":            {Name: "d", Incarnation: gone.Incarnation, Ops: setOp("k", "x")},
		"batch id, no lease": {Name: "a", Incarnation: a.Incarnation, BatchId: "b1", Ops: setOp("k", "x")},
		"another's lease":    {Name: "a", Incarnation: a.Incarnation, BatchId: "b2", LeaseId: b.LeaseId, Ops: setOp("k", "x")},
	}
	var (
		whats []string
		reqs  = []*pb.SubmitRequest{
			{Name: "a", Incarnation: a.Incarnation, Ops: setOp("k1", "v1")},
			{Name: "b", Incarnation: b.Incarnation, BatchId: "mine", LeaseId: b.LeaseId, Ops: setOp("k2", "v2")},
		}
	)
	for what, r := range refused {
		whats = append(whats, what)
		reqs = append(reqs, r)
	}

	stream, err := api.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := resultsOf(t, stream, reqs...)
	for id := uint64(1); id <= 2; id++ {
		if err := resultErr(got[id]); err != nil || got[id].GetSubmitted().GetToken() == "" {
			t.Fatalf("submission %d: %v %v", id, got[id].GetSubmitted(), err)
		}
	}
	if got[2].GetSubmitted().GetBatchId() != "mine" || got[1].GetSubmitted().GetBatchId() == "" {
		t.Errorf("batch ids %q and %q", got[1].GetSubmitted().GetBatchId(), got[2].GetSubmitted().GetBatchId())
	}
	for i, what := range whats {
		r := got[uint64(i+3)]
		if r.GetSubmitted() != nil {
			t.Errorf("%s: accepted", what)
			continue
		}
		_, unaryErr := api.Submit(ctx, reqs[i+2])
		if streamErr := resultErr(r); !sameStatus(streamErr, unaryErr) || apierr.ReasonOf(unaryErr) == "" {
			t.Errorf("%s: the stream answered %v, Submit %v", what, streamErr, unaryErr)
		}
	}

	// The same batch id again, on the same stream: the first token.
	again := resultsOf(t, stream, reqs[1])
	if tok := again[1].GetSubmitted().GetToken(); tok != got[2].GetSubmitted().GetToken() {
		t.Errorf("resent batch id: token %q, first %q (%v)", tok, got[2].GetSubmitted().GetToken(), resultErr(again[1]))
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want the stream's OK end", err)
	}
	// Two batches stored, nothing for the refusals or the resend.
	resp, err := cli.Get(ctx, s.layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 2 {
		t.Errorf("%d batches stored, want 2", resp.Count)
	}
}

// A stream's submissions pay the caller identity's call rate one by one,
// and are refused RESOURCE_EXHAUSTED with a retry hint past it, the
// stream going on; a stream counts as one of the node's streams.
func TestSubmitStreamPaysTheLimitsOfEachSubmission(t *testing.T) {
	s, api, _ := streamAPI(t, Config{CallRate: 0.001, CallBurst: 4, MaxStreams: 1})
	ctx := testenv.Ctx(t, 60*time.Second)
	a, err := api.Register(ctx, &pb.RegisterRequest{Name: "a", TtlSeconds: 30}) // one call of the burst
	if err != nil {
		t.Fatal(err)
	}
	stream, err := api.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []*pb.SubmitRequest
	for range 5 {
		reqs = append(reqs, &pb.SubmitRequest{Name: "a", Incarnation: a.Incarnation, Ops: setOp("k", "v")})
	}
	got := resultsOf(t, stream, reqs...)
	accepted := 0
	for _, r := range got {
		if err := resultErr(r); err != nil {
			if hint := limited(t, err); hint <= 0 {
				t.Errorf("retry hint %v", hint)
			}
			continue
		}
		accepted++
	}
	if accepted != 3 || s.cfg.Stats.RateLimited.Load() != 2 {
		t.Errorf("%d accepted, %d refused by the rate; want 3 and 2", accepted, s.cfg.Stats.RateLimited.Load())
	}
	// MaxStreams is 1, and this stream holds it.
	second, err := api.SubmitStream(ctx)
	if err == nil {
		_, err = second.Recv()
	}
	limited(t, err)
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v", err)
	}
}

// The node ends a stream OK, once it has answered what it read, when it
// stops and when the connection is past its maximum age; a new stream on a
// stopping node is UNAVAILABLE.
func TestSubmitStreamEndsOKOnceItHasAnswered(t *testing.T) {
	for _, tc := range []struct {
		what string
		cfg  Config
		stop bool
	}{
		// An age the stream's three submissions are answered within, and
		// that ends the stream, idle, with no message after it.
		{"connection past its age", Config{MaxConnectionAge: 2 * time.Second}, false},
		{"node stopping", Config{}, true},
	} {
		for _, how := range servings {
			t.Run(tc.what+"/"+how.name, func(t *testing.T) { submitStreamEndsOK(t, tc.cfg, tc.stop, how) })
		}
	}
}

// submitStreamEndsOK is TestSubmitStreamEndsOKOnceItHasAnswered for one
// config, served through how; stop closes the server after the answers.
func submitStreamEndsOK(t *testing.T, cfg Config, stop bool, how serving) {
	s, api, _ := streamAPIWith(t, cfg, how)
	ctx := testenv.Ctx(t, 60*time.Second)
	a, err := api.Register(ctx, &pb.RegisterRequest{Name: "a", TtlSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := api.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.SubmitRequest{Name: "a", Incarnation: a.Incarnation, Ops: setOp("k", "v")}
	for _, r := range resultsOf(t, stream, req, req, req) {
		if err := resultErr(r); err != nil {
			t.Fatal(err)
		}
	}
	if stop {
		s.Close()
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("%v, want the stream's OK end", err)
	}
	if stop {
		next, err := api.SubmitStream(ctx)
		if err == nil {
			_, err = next.Recv()
		}
		if status.Code(err) != codes.Unavailable || apierr.ReasonOf(err) != apierr.ReasonUnavailable {
			t.Fatalf("a new stream on a stopping node: %v", err)
		}
	}
}

// With mTLS and per-name authorization, each submission of a stream may
// act only as a name the client certificate allows: another name is
// PERMISSION_DENIED, with an audit line, and the stream goes on.
func TestSubmitStreamAuthorizesEachSubmission(t *testing.T) {
	for _, how := range servings {
		t.Run(how.name, func(t *testing.T) { submitStreamAuthorizes(t, how) })
	}
}

func submitStreamAuthorizes(t *testing.T, how serving) {
	api, log := mutualTLSAPI(t, how)
	ctx := testenv.Ctx(t, 60*time.Second)
	a, err := api.Register(ctx, &pb.RegisterRequest{Name: "agent-1", TtlSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := api.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := resultsOf(t, stream,
		&pb.SubmitRequest{Name: "agent-2", Incarnation: a.Incarnation, Ops: setOp("k", "v")},
		&pb.SubmitRequest{Name: "agent-1", Incarnation: a.Incarnation, Ops: setOp("k", "v")})
	if err := resultErr(got[1]); status.Code(err) != codes.PermissionDenied || apierr.ReasonOf(err) != apierr.ReasonPermissionDenied {
		t.Errorf("agent-1's certificate acting as agent-2: %v", err)
	}
	if err := resultErr(got[2]); err != nil {
		t.Errorf("agent-1's certificate acting as agent-1: %v", err)
	}
	if l := log.String(); !strings.Contains(l, `"event":"permission_denied"`) || !strings.Contains(l, `"name":"agent-2"`) {
		t.Errorf("no audit line of the refusal:\n%s", l)
	}
}

// mutualTLSAPI serves an API with mTLS and per-name authorization through
// how, and returns a client of it whose certificate allows agent-1, and
// the server's log.
func mutualTLSAPI(t *testing.T, how serving) (pb.CoordinatorClient, *testenv.SyncBuffer) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	ca := testcerts.NewCA(t, "api")
	server, client := ca.Server("node"), ca.Client("agent-1")
	tlsCfg, err := TLSFiles{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: ca.CertFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	log := new(testenv.SyncBuffer)
	s, err := New(Config{Etcd: cli, Namespace: "stream-tls", TLS: tlsCfg, AuthorizeNames: true,
		Logger: slog.New(slog.NewJSONHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(client.CertFile, client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(serveLoopbackWith(t, s, how), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: caPool(t, ca.CertFile), Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewCoordinatorClient(conn), log
}

// errorStatus keeps a refusal's details: the ErrorInfo and, for a limit,
// the RetryInfo.
func TestErrorStatusKeepsTheDetails(t *testing.T) {
	err := exhausted("call rate", 2*time.Second, "over")
	e := errorStatus(err)
	back := status.Convert(resultErr(&pb.StreamResult{Error: e}))
	if back.Code() != codes.ResourceExhausted || apierr.ReasonOf(back.Err()) != apierr.ReasonExhausted {
		t.Fatalf("%v", back.Proto())
	}
	var retry *errdetails.RetryInfo
	for _, d := range back.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != 2*time.Second {
		t.Errorf("retry info %v", retry)
	}
}

// The submissions of a message bounded alike share one deadline, which
// ends once the last of them and the message are done; another bound gets
// a deadline of its own.
func TestDeadlinesAreSharedWithinAMessage(t *testing.T) {
	s := &Server{cfg: Config{WriteTimeout: time.Minute}}
	var ds deadlines
	a := ds.of(context.Background(), s.timeoutOf(&pb.StreamSubmission{}))
	b := ds.of(context.Background(), s.timeoutOf(&pb.StreamSubmission{TimeoutMs: 60_000}))
	c := ds.of(context.Background(), s.timeoutOf(&pb.StreamSubmission{TimeoutMs: 500}))
	if a != b || a == c || len(ds) != 2 {
		t.Fatalf("deadlines %p %p %p, %d of them", a, b, c, len(ds))
	}
	if dl, ok := c.ctx.Deadline(); !ok || time.Until(dl) > 500*time.Millisecond {
		t.Errorf("timeout_ms 500: deadline %v", dl)
	}
	a.done()
	c.done()
	ds.release()
	if a.ctx.Err() != nil {
		t.Fatal("a deadline ended while a submission still uses it")
	}
	if c.ctx.Err() == nil {
		t.Error("a deadline no submission uses goes on")
	}
	b.done()
	if a.ctx.Err() == nil {
		t.Error("the shared deadline goes on after its last submission")
	}
}
