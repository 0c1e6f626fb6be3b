package verify_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
	"github.com/coordinator-dev/coordinator/pkg/verify"
)

// TestVerifyRate measures verify's keys a second, unpaced, on 100,000 keys
// of restore's record over three servers; run on demand (BENCHMARKS.md):
//
//	COORDINATOR_VERIFY_RATE=1 go test -run TestVerifyRate -v ./pkg/verify
func TestVerifyRate(t *testing.T) {
	if os.Getenv("COORDINATOR_VERIFY_RATE") == "" {
		t.Skip("a measurement: set COORDINATOR_VERIFY_RATE=1 to run it")
	}
	const n = 100000
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("rate")
	var servers []hashring.Server
	for range 3 {
		servers = append(servers, hashring.Server{Addr: testenv.StartMemcached(t).Addr})
	}
	ctx := testenv.Ctx(t, 10*time.Minute)
	top := topology.Topology{Distribution: hashring.Ketama, Servers: servers}
	if _, err := topology.Ensure(ctx, cli, l, top); err != nil {
		t.Fatal(err)
	}
	ring, err := hashring.New(top.Ring())
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*bufio.ReadWriter, len(servers))
	for i, s := range servers {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	var txn []clientv3.Op
	for i := range n {
		k, v := fmt.Sprintf("key-%06d", i), fmt.Sprintf("value-%06d-%s", i, "0123456789abcdef0123456789abcdef")
		rec, _ := json.Marshal(restore.Record{Value: []byte(v), Term: 1})
		txn = append(txn, clientv3.OpPut(l.MemcachedValue(k), string(rec)))
		fmt.Fprintf(conns[ring.Index(k)], "set %s %d 0 %d noreply\r\n%s\r\n", k, memfence.Flags(1), len(v), v)
		if len(txn) == 100 || i == n-1 {
			if _, err := cli.Txn(ctx).Then(txn...).Commit(); err != nil {
				t.Fatal(err)
			}
			txn = txn[:0]
		}
	}
	for _, rw := range conns {
		rw.WriteString("mn\r\n")
		if err := rw.Flush(); err != nil {
			t.Fatal(err)
		}
		if line, err := rw.ReadString('\n'); err != nil || line != "MN\r\n" {
			t.Fatalf("fill: %q, %v", line, err)
		}
	}
	rep, err := verify.Run(ctx, verify.Config{Etcd: cli, Layout: l, Unpaced: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.Keys != n {
		t.Fatalf("report %+v", rep)
	}
	t.Logf("verify: %d keys over %d servers in %.2fs: %.0f keys/s", rep.Keys, len(servers), rep.Seconds, rep.KeysPerSecond)
}
