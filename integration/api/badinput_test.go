package api

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// Bad input through HTTP/JSON and gRPC: a clear status with reason INVALID
// (TOO_LARGE for an oversize body), and nothing written to etcd or
// memcached.
func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	c := startCluster(t)
	const bodyLimit = 64 << 10
	n := startAPI(t, c.etcd, apiserver.Config{MaxBodyBytes: bodyLimit, Limits: ops.Limits{MaxItemBytes: 4096}})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	reg := register(t, ctx, api, "agent", nil)
	inc := strconv.FormatInt(reg.Incarnation, 10)
	submit := func(ops string) string {
		return `{"name":"agent","incarnation":"` + inc + `","ops":[` + ops + `]}`
	}
	big := strings.Repeat("x", bodyLimit)
	cases := []struct {
		what, path, body string
		code             int
		reason           string
	}{
		{"malformed JSON", "/v1/submit", `{"name":"agent",`, 400, apierr.ReasonInvalid},
		{"not JSON", "/v1/submit", `set bad 1`, 400, apierr.ReasonInvalid},
		{"name of the wrong type", "/v1/submit", `{"name":5,"incarnation":"` + inc + `","ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"incarnation of the wrong type", "/v1/submit", `{"name":"agent","incarnation":"abc","ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"ops of the wrong type", "/v1/submit", `{"name":"agent","incarnation":"` + inc + `","ops":{"set":{"key":"bad"}}}`, 400, apierr.ReasonInvalid},
		{"unknown field", "/v1/submit", `{"name":"agent","incarnation":"` + inc + `","bogus":1,"ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"unknown field in an op", "/v1/submit", submit(`{"set":{"key":"bad","text":"1","flags":3}}`), 400, apierr.ReasonInvalid},
		{"unknown op", "/v1/submit", submit(`{"incr":{"key":"bad"}}`), 400, apierr.ReasonInvalid},
		{"empty op", "/v1/submit", submit(`{}`), 400, apierr.ReasonInvalid},
		{"no ops", "/v1/submit", submit(``), 400, apierr.ReasonInvalid},
		{"value and text", "/v1/submit", submit(`{"set":{"key":"bad","text":"1","value":"MQ=="}}`), 400, apierr.ReasonInvalid},
		{"neither value nor text", "/v1/submit", submit(`{"set":{"key":"bad"}}`), 400, apierr.ReasonInvalid},
		{"value not base64", "/v1/submit", submit(`{"set":{"key":"bad","value":"%%%"}}`), 400, apierr.ReasonInvalid},
		{"empty key", "/v1/submit", submit(`{"set":{"key":"","text":"1"}}`), 400, apierr.ReasonInvalid},
		{"key with a space", "/v1/submit", submit(`{"set":{"key":"bad key","text":"1"}}`), 400, apierr.ReasonInvalid},
		{"key over 250 bytes", "/v1/submit", submit(`{"set":{"key":"` + strings.Repeat("k", 251) + `","text":"1"}}`), 400, apierr.ReasonInvalid},
		{"value over the item size", "/v1/submit", submit(`{"set":{"key":"bad","text":"` + strings.Repeat("v", 5000) + `"}}`), 400, apierr.ReasonInvalid},
		{"negative expiration", "/v1/submit", submit(`{"set":{"key":"bad","text":"1","expiration_seconds":-1}}`), 400, apierr.ReasonInvalid},
		{"a bad op among good ones", "/v1/submit", submit(`{"set":{"key":"bad","text":"1"}},{"delete":{"key":""}}`), 400, apierr.ReasonInvalid},
		{"bad name", "/v1/submit", `{"name":"a/b","incarnation":"` + inc + `","ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"no incarnation", "/v1/submit", `{"name":"agent","ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"bad batch id", "/v1/submit", `{"name":"agent","incarnation":"` + inc + `","batch_id":"a b","ops":[{"set":{"key":"bad","text":"1"}}]}`, 400, apierr.ReasonInvalid},
		{"oversize body", "/v1/submit", submit(`{"set":{"key":"bad","text":"` + big + `"}}`), 413, apierr.ReasonTooLarge},
		{"bad token", "/v1/wait-applied", `{"token":"1.x"}`, 400, apierr.ReasonInvalid},
		{"register without a name", "/v1/register", `{}`, 400, apierr.ReasonInvalid},
		{"register with a negative TTL", "/v1/register", `{"name":"other","ttl_seconds":-5}`, 400, apierr.ReasonInvalid},
		{"register with a TTL of the wrong type", "/v1/register", `{"name":"other","ttl_seconds":"long"}`, 400, apierr.ReasonInvalid},
		{"keepalive of another lease", "/v1/keepalive", `{"name":"agent","incarnation":"` + inc + `","lease_id":"12345"}`, 400, apierr.ReasonInvalid},
	}
	for _, tc := range cases {
		res := post(t, ctx, n.Addr, tc.path, tc.body)
		if res.Code != tc.code || res.Reason() != tc.reason {
			t.Errorf("%s: HTTP %d reason %q, want %d %q: %.300s", tc.what, res.Code, res.Reason(), tc.code, tc.reason, res.Raw)
		}
		if msg, _ := res.Body["message"].(string); msg == "" {
			t.Errorf("%s: no message in %.300s", tc.what, res.Raw)
		}
	}
	// A body of unknown length (chunked) over the limit.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, submit(`{"set":{"key":"bad","text":"`+big+`"}}`))
		pw.Close()
	}()
	if res := post(t, ctx, n.Addr, "/v1/submit", io.Reader(pr)); res.Code != http.StatusRequestEntityTooLarge || res.Reason() != apierr.ReasonTooLarge {
		t.Errorf("chunked oversize body: HTTP %d %.300s", res.Code, res.Raw)
	}
	pr.Close()
	if res := get(t, ctx, n.Addr, "/v1/nowhere"); res.Code != http.StatusNotFound {
		t.Errorf("unknown route: HTTP %d %s", res.Code, res.Raw)
	}

	// The same through gRPC.
	_, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("bad key", "1")}})
	wantRefused(t, "gRPC bad key", err, codes.InvalidArgument, apierr.ReasonInvalid)
	_, err = api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: reg.Incarnation, Ops: []*pb.Op{
		{Op: &pb.Op_Set{Set: &pb.SetOp{Key: "bad", Data: &pb.SetOp_Text{Text: "1"}, ExpirationSeconds: -3}}},
	}})
	wantRefused(t, "gRPC negative expiration", err, codes.InvalidArgument, apierr.ReasonInvalid)
	_, err = api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: "nope"})
	wantRefused(t, "gRPC bad token", err, codes.InvalidArgument, apierr.ReasonInvalid)

	// Nothing was written: no batch in etcd, no registration but agent's,
	// nothing in memcached.
	if got := pendingKeys(t, ctx, c.etcd); got != 0 {
		t.Errorf("%d batches stored by refused input", got)
	}
	views, err := api.Registrations(ctx, &pb.RegistrationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(views.Registrations) != 1 || views.Registrations[0].Name != "agent" {
		t.Errorf("registrations after refused input: %v", views.Registrations)
	}
	if v := readKey(t, c.mc.Addr, "bad"); v != "" {
		t.Errorf("refused key landed: %q", v)
	}
	// Good input still goes through.
	res := post(t, ctx, n.Addr, "/v1/submit", submit(`{"set":{"key":"good","text":"1"}}`))
	if res.Code != http.StatusOK {
		t.Fatalf("good submit: HTTP %d %s", res.Code, res.Raw)
	}
	tok, _ := res.Body["token"].(string)
	if res := post(t, ctx, n.Addr, "/v1/wait-applied", `{"token":"`+tok+`"}`); res.Code != http.StatusOK {
		t.Fatalf("wait: HTTP %d %s", res.Code, res.Raw)
	}
	if v := readKey(t, c.mc.Addr, "good"); v != "1" {
		t.Fatalf("good = %q", v)
	}
}
