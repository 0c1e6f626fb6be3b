package pool_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// TestRestoreOnRestart: one of three servers restarts. With
// RestoreOnRestart its keys come back with their latest values and terms,
// and keys written again right after the restart keep their newer value;
// without it, they stay missing. Either way the restart is reported.
func TestRestoreOnRestart(t *testing.T) {
	for _, restore := range []bool{true, false} {
		t.Run(fmt.Sprintf("restore=%v", restore), func(t *testing.T) {
			_, cli := testenv.Etcd(t)
			ms, servers := startPool(t, 3)
			ns := fmt.Sprintf("restore-%v", restore)
			stats := &memfence.Stats{}
			testenv.StartNode(t, node.Config{
				Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: addrs(servers), Distribution: hashring.Ketama,
				MemcachedStats: stats, RestartCheckInterval: 50 * time.Millisecond, RestoreOnRestart: restore,
			})
			keys := map[string]string{}
			for i := range 300 {
				keys[fmt.Sprintf("r-%d", i)] = fmt.Sprintf("old-%d", i)
			}
			waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
			for i := range 300 { // a second value of every key: the latest
				keys[fmt.Sprintf("r-%d", i)] = fmt.Sprintf("latest-%d", i)
			}
			waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
			testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= 2 }, "the leader does not check its servers")
			ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: servers})
			if err != nil {
				t.Fatal(err)
			}
			restarted := ms[1]
			var onIt []string
			for k := range keys {
				if ring.Servers()[ring.Index(k)].Addr == restarted.Addr {
					onIt = append(onIt, k)
				}
			}
			if len(onIt) < 20 {
				t.Fatalf("only %d keys on %s", len(onIt), restarted.Addr)
			}
			in, err := inspect.New(cli, ns)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testenv.Ctx(t, 90*time.Second)
			st, err := in.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			term := uint32(st.Term)
			restarted.Stop()
			restarted.Start()
			// Written again at once: this value must stay, whether it
			// lands before or after the restore.
			newer := map[string]string{onIt[0]: "newer-0", onIt[1]: "newer-1"}
			waitApplied(t, cli, ns, submitKeys(t, cli, ns, newer))
			for k, v := range newer {
				keys[k] = v
			}
			testenv.Eventually(t, 30*time.Second, func() bool {
				st, err := in.Status(ctx)
				return err == nil && st.MemcachedRestarts == 1 && st.LastRestart.Server == restarted.Addr
			}, "the restart of %s is not reported", restarted.Addr)
			mc := memcache.NewFromSelector(ring)
			t.Cleanup(func() { mc.Close() })
			read := func() (found, right int) {
				got, err := mc.GetMulti(onIt)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range onIt {
					if it, ok := got[k]; ok {
						found++
						if string(it.Value) == keys[k] && memfence.TermOf(it.Flags) == term {
							right++
						}
					}
				}
				return found, right
			}
			if restore {
				testenv.Eventually(t, 30*time.Second, func() bool {
					_, right := read()
					return right == len(onIt)
				}, "the keys of %s did not come back with their latest values", restarted.Addr)
				return
			}
			checks := stats.RestartChecks.Load()
			testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= checks+3 }, "the checks stopped")
			if found, _ := read(); found != len(newer) {
				t.Fatalf("without restore, %d keys of %s are found; want only the %d written again", found, restarted.Addr, len(newer))
			}
		})
	}
}
