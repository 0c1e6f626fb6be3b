package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// storeRegistrations writes a registration of every name straight to etcd
// in the default namespace's layout, 128 to a transaction, under one lease,
// and returns each name's incarnation.
func storeRegistrations(t *testing.T, ctx context.Context, cli *clientv3.Client, names []string, host func(string) string) map[string]int64 {
	t.Helper()
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	incs := map[string]int64{}
	for chunk := range slices.Chunk(names, 128) {
		var puts []clientv3.Op
		for _, n := range chunk {
			rec, err := json.Marshal(map[string]any{"host": host(n), "pid": 7, "started": time.Unix(0, 0).UTC(), "ttl_seconds": 3600})
			if err != nil {
				t.Fatal(err)
			}
			puts = append(puts, clientv3.OpPut(layout.Reg(n), string(rec), clientv3.WithLease(grant.ID)))
		}
		resp, err := cli.Txn(ctx).Then(puts...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range chunk {
			incs[n] = resp.Header.Revision
		}
	}
	return incs
}

// With 10,000 registrations, one with a 1.5 MB holder host, paging through
// Registrations over gRPC and HTTP lists every one exactly once, in name
// order, each page bounded in size; the huge record's page holds at most
// MaxPageBytes of other rows beside it.
func TestRegistrationsPagedAt10000(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 120*time.Second)
	const n = 10000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("caller-%05d", i)
	}
	huge := strings.Repeat("h", 1500000)
	incs := storeRegistrations(t, ctx, cli, names, func(name string) string {
		if name == "caller-07777" {
			return huge
		}
		return "host-" + name
	})
	api := startAPI(t, cli, apiserver.Config{})
	c := grpcClient(t, api.Addr, nil)

	check := func(t *testing.T, page []*pb.Registration, seen map[string]bool, prev *string) {
		t.Helper()
		for _, r := range page {
			if seen[r.Name] {
				t.Fatalf("%s listed twice", r.Name)
			}
			if r.Name <= *prev {
				t.Fatalf("%s after %s", r.Name, *prev)
			}
			if r.Incarnation != incs[r.Name] || r.Status != inspect.StatusActive || r.TtlLeftSeconds <= 0 || r.HolderPid != 7 {
				t.Fatalf("row %v, want incarnation %d, active, a TTL and pid 7", r, incs[r.Name])
			}
			seen[r.Name], *prev = true, r.Name
		}
	}
	// A row here is under 150 bytes of protobuf, 250 of JSON.
	const rowBound, jsonRowBound = 150, 250

	t.Run("grpc", func(t *testing.T) {
		for _, size := range []int32{0, 1000, 5000} {
			seen, prev := map[string]bool{}, ""
			req := &pb.RegistrationsRequest{PageSize: size}
			pages := 0
			var slowest time.Duration
			for {
				t0 := time.Now()
				resp, err := c.Registrations(ctx, req)
				slowest = max(slowest, time.Since(t0))
				if err != nil {
					t.Fatal(err)
				}
				pages++
				want := min(int(size), inspect.MaxPageSize)
				if size == 0 {
					want = inspect.DefaultPageSize
				}
				if got := len(resp.Registrations); got > want {
					t.Fatalf("page size %d: a page of %d rows", size, got)
				}
				bound := want * rowBound
				if slices.ContainsFunc(resp.Registrations, func(r *pb.Registration) bool { return r.HolderHost == huge }) {
					bound = inspect.MaxPageBytes + len(huge) + bound
				}
				if b := proto.Size(resp); b > bound {
					t.Fatalf("page size %d: a page of %d bytes, over %d", size, b, bound)
				}
				check(t, resp.Registrations, seen, &prev)
				if resp.NextPageToken == "" {
					break
				}
				req.PageToken = resp.NextPageToken
			}
			if len(seen) != n {
				t.Fatalf("page size %d: %d listed, want %d", size, len(seen), n)
			}
			t.Logf("gRPC page size %d: %d pages, slowest %v", size, pages, slowest)
		}
	})

	t.Run("http", func(t *testing.T) {
		seen, prev := map[string]bool{}, ""
		tok := ""
		for {
			path := "/v1/registrations?page_size=700"
			if tok != "" {
				path += "&page_token=" + url.QueryEscape(tok)
			}
			res := get(t, ctx, api.Addr, path)
			if res.Code != 200 {
				t.Fatalf("GET %s: %d %s", path, res.Code, res.Raw)
			}
			var page struct {
				Registrations []struct {
					Name        string
					Incarnation string
					Status      string
					HolderHost  string `json:"holder_host"`
				}
				NextPageToken string `json:"next_page_token"`
			}
			if err := json.Unmarshal([]byte(res.Raw), &page); err != nil {
				t.Fatal(err)
			}
			bound := 700 * jsonRowBound
			if strings.Contains(res.Raw, huge) {
				bound += inspect.MaxPageBytes + len(huge)
			}
			if len(page.Registrations) > 700 || len(res.Raw) > bound {
				t.Fatalf("a page of %d rows, %d bytes", len(page.Registrations), len(res.Raw))
			}
			var rows []*pb.Registration
			for _, r := range page.Registrations {
				var inc int64
				fmt.Sscan(r.Incarnation, &inc)
				rows = append(rows, &pb.Registration{Name: r.Name, Incarnation: inc, Status: r.Status, TtlLeftSeconds: 1, HolderPid: 7})
			}
			check(t, rows, seen, &prev)
			if tok = page.NextPageToken; tok == "" {
				break
			}
		}
		if len(seen) != n {
			t.Fatalf("%d listed, want %d", len(seen), n)
		}
	})
}

// Ops pages through the pending operations in token order over gRPC and
// HTTP, batches of one transaction by index, and the legacy limit is a page
// size.
func TestOpsPaged(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	var want []string // token/index
	for txn := range 30 {
		var puts []clientv3.Op
		nb := 1 + txn%3
		for i := range nb {
			b := &ops.Batch{Name: "svc", Incarnation: 1, ID: fmt.Sprintf("id-%03d-%d", txn, nb-i), Index: uint32(i)}
			for o := range 1 + i {
				b.Ops = append(b.Ops, ops.Set(fmt.Sprintf("k%d-%d-%d", txn, i, o), []byte("v"), 0))
			}
			puts = append(puts, clientv3.OpPut(layout.Batch(b.Name, b.Incarnation, b.ID), string(b.Encode())))
		}
		resp, err := cli.Txn(ctx).Then(puts...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		for i := range nb {
			tok := tokenseq.Token{Revision: resp.Header.Revision, Index: uint32(i)}
			for o := range 1 + i {
				want = append(want, fmt.Sprintf("%s/%d", tok, o))
			}
		}
	}
	api := startAPI(t, cli, apiserver.Config{})
	c := grpcClient(t, api.Addr, nil)

	for _, req := range []*pb.OpsRequest{{PageSize: 4}, {Limit: 7}, {PageSize: 1}, {}} {
		var got []string
		size := req.PageSize
		for {
			resp, err := c.Ops(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Total != int64(len(want)) || resp.TotalLowerBound {
				t.Fatalf("total %d (lower bound %v), want %d", resp.Total, resp.TotalLowerBound, len(want))
			}
			if limit := max(size, req.Limit); limit > 0 && len(resp.Ops) > int(limit) {
				t.Fatalf("%v: a page of %d", req, len(resp.Ops))
			}
			for _, o := range resp.Ops {
				got = append(got, fmt.Sprintf("%s/%d", o.Token, o.Index))
			}
			if resp.NextPageToken == "" {
				break
			}
			req = &pb.OpsRequest{PageSize: req.PageSize, Limit: req.Limit, PageToken: resp.NextPageToken}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%v: ops\n%v\nwant\n%v", req, got, want)
		}
	}

	res := get(t, ctx, api.Addr, "/v1/ops?page_size=5")
	if res.Code != 200 || len(res.Body["ops"].([]any)) != 5 || res.Body["next_page_token"] == "" {
		t.Fatalf("GET /v1/ops?page_size=5: %d %s", res.Code, res.Raw)
	}
	next := get(t, ctx, api.Addr, "/v1/ops?page_size=5&page_token="+url.QueryEscape(res.Body["next_page_token"].(string)))
	first, _ := next.Body["ops"].([]any)
	if next.Code != 200 || len(first) != 5 || first[0].(map[string]any)["key"] == res.Body["ops"].([]any)[0].(map[string]any)["key"] {
		t.Fatalf("second page: %d %s", next.Code, next.Raw)
	}
}

// A page token that is not a next_page_token of the same call, a negative
// page size and a negative limit are INVALID over gRPC (InvalidArgument)
// and HTTP (400), with a message naming the field.
func TestBadPageRequestsAreInvalid(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	storeRegistrations(t, ctx, cli, []string{"a", "b", "c"}, func(string) string { return "h" })
	api := startAPI(t, cli, apiserver.Config{})
	c := grpcClient(t, api.Addr, nil)
	regs, err := c.Registrations(ctx, &pb.RegistrationsRequest{PageSize: 1})
	if err != nil || regs.NextPageToken == "" {
		t.Fatalf("%v %v", regs, err)
	}

	for what, call := range map[string]func() error{
		"garbage registrations token": func() error {
			_, err := c.Registrations(ctx, &pb.RegistrationsRequest{PageToken: "not-a-token"})
			return err
		},
		"truncated registrations token": func() error {
			_, err := c.Registrations(ctx, &pb.RegistrationsRequest{PageToken: regs.NextPageToken[:4]})
			return err
		},
		"registrations token to ops": func() error {
			_, err := c.Ops(ctx, &pb.OpsRequest{PageToken: regs.NextPageToken})
			return err
		},
		"negative registrations page size": func() error {
			_, err := c.Registrations(ctx, &pb.RegistrationsRequest{PageSize: -1})
			return err
		},
		"negative ops page size": func() error {
			_, err := c.Ops(ctx, &pb.OpsRequest{PageSize: -5})
			return err
		},
		"negative ops limit": func() error {
			_, err := c.Ops(ctx, &pb.OpsRequest{Limit: -1})
			return err
		},
	} {
		wantRefused(t, what, call(), codes.InvalidArgument, apierr.ReasonInvalid)
	}
	_, err = c.Registrations(ctx, &pb.RegistrationsRequest{PageToken: "x"})
	if !strings.Contains(err.Error(), "page_token") {
		t.Errorf("error does not name page_token: %v", err)
	}

	for _, path := range []string{
		"/v1/registrations?page_token=nope",
		"/v1/registrations?page_size=-3",
		"/v1/ops?page_token=" + url.QueryEscape(regs.NextPageToken),
		"/v1/ops?page_size=-1",
	} {
		res := get(t, ctx, api.Addr, path)
		if res.Code != 400 || res.Reason() != apierr.ReasonInvalid {
			t.Errorf("GET %s: %d %s, want 400 INVALID", path, res.Code, res.Raw)
		}
	}
	// Over the maximum is the maximum, not an error.
	if res := get(t, ctx, api.Addr, "/v1/registrations?page_size=100000"); res.Code != 200 {
		t.Errorf("page_size over the maximum: %d %s", res.Code, res.Raw)
	}
}
