package leasekeeper_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/leasekeeper"
)

func newKeeper(t testing.TB, cli *clientv3.Client) *leasekeeper.Keeper {
	t.Helper()
	k, err := leasekeeper.New(leasekeeper.Config{Etcd: cli, Logger: testenv.Logger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}

// grantMany grants n leases of ttl seconds, several at a time.
func grantMany(t testing.TB, cli *clientv3.Client, n int, ttl int64) []clientv3.LeaseID {
	t.Helper()
	const workers = 8
	ids := make([]clientv3.LeaseID, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				resp, err := cli.Grant(context.Background(), ttl)
				if err != nil {
					t.Errorf("grant: %v", err)
					return
				}
				ids[i] = resp.ID
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return ids
}

func grant(t testing.TB, cli *clientv3.Client, ttl int64) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Grant(testenv.Ctx(t, 10*time.Second), ttl)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	return resp.ID
}

// remaining is the lease's remaining TTL in seconds, -1 once it is gone.
func remaining(t testing.TB, cli *clientv3.Client, id clientv3.LeaseID) int64 {
	t.Helper()
	resp, err := cli.TimeToLive(testenv.Ctx(t, 10*time.Second), id)
	if err != nil {
		t.Fatalf("time to live of %x: %v", id, err)
	}
	return resp.TTL
}

// next waits for a renewal on ch; ch closing or none arriving within
// timeout fails the test.
func next(t testing.TB, ch <-chan int64, timeout time.Duration) int64 {
	t.Helper()
	select {
	case ttl, ok := <-ch:
		if !ok {
			t.Fatalf("renewals closed")
		}
		if ttl <= 0 {
			t.Fatalf("renewal with TTL %d", ttl)
		}
		return ttl
	case <-time.After(timeout):
		t.Fatalf("no renewal within %s", timeout)
	}
	return 0
}

// renewFor reads renewals on ch for d and returns how many arrived; ch
// closing fails the test.
func renewFor(t testing.TB, ch <-chan int64, d time.Duration) int {
	t.Helper()
	end := time.NewTimer(d)
	defer end.Stop()
	n := 0
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("renewals closed after %d renewals", n)
			}
			n++
		case <-end.C:
			return n
		}
	}
}

// waitClosed reads ch until it is closed, failing the test after timeout.
func waitClosed(t testing.TB, ch <-chan int64, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("renewals not closed within %s", timeout)
		}
	}
}

// isClosed reports whether ch is closed with nothing left to read.
func isClosed(ch <-chan int64) bool {
	select {
	case _, ok := <-ch:
		return !ok
	default:
		return false
	}
}

func TestKeepRenewsUntilStop(t *testing.T) {
	_, cli := testenv.Etcd(t)
	k := newKeeper(t, cli)
	const ttl = 2
	id := grant(t, cli, ttl)
	ch, stop := k.Keep(id)

	// Kept past three TTLs, the lease lives and is renewed every TTL/3.
	if got := next(t, ch, 10*time.Second); got != ttl {
		t.Fatalf("renewal TTL %d, want %d", got, ttl)
	}
	if n := renewFor(t, ch, 3*ttl*time.Second); n < 3*2 {
		t.Fatalf("%d renewals in 3 TTLs, want about 9", n)
	}
	if left := remaining(t, cli, id); left <= 0 {
		t.Fatalf("lease kept for 3 TTLs has TTL %d", left)
	}

	stop()
	stop()
	if !isClosed(ch) {
		t.Fatalf("renewals not closed, or not empty, after stop")
	}
	testenv.Eventually(t, 5*ttl*time.Second, func() bool { return remaining(t, cli, id) == -1 },
		"lease %x still alive after stop", id)
}

func TestGoneLeaseCloses(t *testing.T) {
	_, cli := testenv.Etcd(t)
	k := newKeeper(t, cli)

	id := grant(t, cli, 3)
	ch, stop := k.Keep(id)
	defer stop()
	next(t, ch, 10*time.Second)
	if _, err := cli.Revoke(testenv.Ctx(t, 10*time.Second), id); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	waitClosed(t, ch, 10*time.Second) // at the next renewal, a TTL/3 later

	never, stopNever := k.Keep(clientv3.LeaseID(0x5eed))
	defer stopNever()
	waitClosed(t, never, 10*time.Second)
	stop() // after the close, stop does nothing
}

func TestSubscribersShareALease(t *testing.T) {
	_, cli := testenv.Etcd(t)
	k := newKeeper(t, cli)
	const ttl = 2
	id := grant(t, cli, ttl)
	ch1, stop1 := k.Keep(id)
	ch2, stop2 := k.Keep(id)
	defer stop2()
	next(t, ch1, 10*time.Second)
	next(t, ch2, 10*time.Second)

	stop1()
	if !isClosed(ch1) {
		t.Fatalf("first subscriber's renewals not closed after its stop")
	}
	if n := renewFor(t, ch2, 2*ttl*time.Second); n < 2 {
		t.Fatalf("other subscriber got %d renewals in 2 TTLs", n)
	}
	if left := remaining(t, cli, id); left <= 0 {
		t.Fatalf("lease with a subscriber left has TTL %d", left)
	}
}

func TestManyLeasesFewGoroutines(t *testing.T) {
	_, cli := testenv.Etcd(t)
	const n, ttl = 2000, 5
	ids := grantMany(t, cli, n, ttl)
	k := newKeeper(t, cli)
	chs := make([]<-chan int64, n)
	stops := make([]func(), n)
	chs[0], stops[0] = k.Keep(ids[0])
	next(t, chs[0], 10*time.Second) // the stream is open
	goroutines := runtime.NumGoroutine()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	for i := 1; i < n; i++ {
		chs[i], stops[i] = k.Keep(ids[i])
	}
	for i := 1; i < n; i++ {
		next(t, chs[i], 10*time.Second)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := runtime.NumGoroutine() - goroutines; grown > 5 {
		t.Fatalf("goroutines grew by %d keeping %d more leases", grown, n-1)
	}
	t.Logf("heap per kept lease: %d bytes", (int64(after.HeapAlloc)-int64(before.HeapAlloc))/(n-1))

	// Across a TTL every lease is renewed again, and lives.
	for _, ch := range chs[1:] {
		select {
		case <-ch:
		default:
		}
	}
	if got := renewFor(t, chs[0], ttl*time.Second); got < 2 {
		t.Fatalf("lease 0: %d renewals during a TTL", got)
	}
	for i, ch := range chs[1:] {
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("lease %d: renewals closed", i+1)
			}
		default:
			t.Fatalf("lease %d: no renewal during a TTL", i+1)
		}
	}
	for i := 0; i < n; i += n / 20 {
		if left := remaining(t, cli, ids[i]); left <= 0 {
			t.Fatalf("lease %d has TTL %d", i, left)
		}
	}
	for _, stop := range stops {
		stop()
	}
}

// TestStreamReopens stops the etcd member under a Keeper and starts it
// again: a lease's deadline runs while the member is down, and the leases
// still kept are renewed again once it is back.
func TestStreamReopens(t *testing.T) {
	cfg := embedded.Config{
		Dir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t), LogLevel: "panic",
	}
	var srv *embedded.Server
	start := func() {
		t.Helper()
		var err error
		if srv, err = embedded.Start(testenv.Ctx(t, 60*time.Second), cfg); err != nil {
			t.Fatalf("start etcd: %v", err)
		}
	}
	start()
	t.Cleanup(func() { srv.Close() })
	// A short reconnection backoff, so that the client finds the member
	// back soon after it restarts.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	k := newKeeper(t, cli)

	short, long := grant(t, cli, 2), grant(t, cli, 30)
	shortCh, stopShort := k.Keep(short)
	defer stopShort()
	longCh, stopLong := k.Keep(long)
	defer stopLong()
	next(t, shortCh, 10*time.Second)
	next(t, longCh, 10*time.Second)

	// Close takes seconds, waiting for the stream to end; the short lease
	// is renewed meanwhile, and closes within its 2s TTL of the last
	// renewal.
	srv.Close()
	waitClosed(t, shortCh, 10*time.Second)
	start()
	select { // a renewal from before the restart
	case <-longCh:
	default:
	}
	// The reopened stream sends every lease at once: the renewal comes
	// well within the TTL/3 (10s) etcd's client would wait.
	next(t, longCh, 20*time.Second)
	if left := remaining(t, cli, long); left <= 0 {
		t.Fatalf("lease kept across the restart has TTL %d", left)
	}
	again, stopAgain := k.Keep(grant(t, cli, 2))
	defer stopAgain()
	next(t, again, 10*time.Second)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
}

func TestClose(t *testing.T) {
	_, cli := testenv.Etcd(t)
	id, id2 := grant(t, cli, 10), grant(t, cli, 10)
	goroutines := runtime.NumGoroutine()
	k, err := leasekeeper.New(leasekeeper.Config{Etcd: cli, Logger: testenv.Logger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ch1, stop1 := k.Keep(id)
	ch2, stop2 := k.Keep(id2)
	next(t, ch1, 10*time.Second)
	next(t, ch2, 10*time.Second)

	k.Close()
	waitClosed(t, ch1, time.Second)
	waitClosed(t, ch2, time.Second)
	stop1()
	stop2()
	k.Close()
	ch3, stop3 := k.Keep(id)
	if !isClosed(ch3) {
		t.Fatalf("Keep after Close: renewals not closed")
	}
	stop3()
	// The stream's goroutines in grpc end shortly after Close returns.
	testenv.Eventually(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= goroutines },
		"goroutines left after Close: %d, %d before New", runtime.NumGoroutine(), goroutines)
	if left := remaining(t, cli, id); left <= 0 {
		t.Fatalf("Close revoked the lease: TTL %d", left)
	}
}

func TestValidate(t *testing.T) {
	cfg := leasekeeper.Config{}
	err := cfg.Validate()
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "Etcd" || !errors.Is(err, config.ErrBadConfig) {
		t.Fatalf("Validate of a nil Etcd: %v", err)
	}
	bare := leasekeeper.Config{Etcd: &clientv3.Client{}}
	if err := bare.Validate(); !errors.As(err, &fe) || fe.Field != "Etcd" {
		t.Fatalf("Validate of a client not made by clientv3.New: %v", err)
	}
	if _, err := leasekeeper.New(cfg); !errors.Is(err, config.ErrBadConfig) {
		t.Fatalf("New with a nil Etcd: %v", err)
	}
}

// BenchmarkFootprint reports the heap a kept lease costs (bytes/lease):
// 10,000 leases granted in etcd are kept, each until its first renewal.
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./pkg/leasekeeper
func BenchmarkFootprint(b *testing.B) {
	_, cli := testenv.Etcd(b)
	const n = 10000
	ids := grantMany(b, cli, n, 60)
	k := newKeeper(b, cli)
	chs := make([]<-chan int64, n)
	stops := make([]func(), n)
	var total, runs int64
	var before, after runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i, id := range ids {
			chs[i], stops[i] = k.Keep(id)
		}
		for _, ch := range chs {
			next(b, ch, 30*time.Second)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		total += int64(after.HeapAlloc) - int64(before.HeapAlloc)
		runs++
		for _, stop := range stops {
			stop()
		}
	}
	b.ReportMetric(float64(total)/float64(runs*n), "bytes/lease")
}

// A Keeper that keeps nothing runs no goroutine of its own: a node whose
// API never holds a stream pays nothing for it, and may drop it unclosed.
func TestNewRunsNothingUntilKeep(t *testing.T) {
	_, cli := testenv.Etcd(t)
	k, err := leasekeeper.New(leasekeeper.Config{Etcd: cli, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "leasekeeper.(*Keeper)")
	}
	if running() {
		t.Fatal("a goroutine of the Keeper runs before any Keep")
	}
	_, stop := k.Keep(grant(t, cli, 10))
	if !running() {
		t.Fatal("no goroutine of the Keeper runs once a lease is kept")
	}
	stop()
	k.Close()
}
