package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// distributionFlag is a --memcached-distribution value: modula or ketama.
type distributionFlag hashring.Distribution

func (d *distributionFlag) String() string { return string(d.value()) }

// Set checks and sets the value.
func (d *distributionFlag) Set(s string) error {
	v, err := hashring.ParseDistribution(s)
	if err != nil {
		return err
	}
	*d = distributionFlag(v)
	return nil
}

// Type names the value in usage lines.
func (d *distributionFlag) Type() string { return "modula|ketama" }

// value is the distribution, the default when unset.
func (d *distributionFlag) value() hashring.Distribution {
	v, _ := hashring.ParseDistribution(string(*d))
	return v
}

func newTopologyCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Show or change the namespace's memcached servers and distribution",
		Long: `The topology is the namespace's pool of memcached servers, in order, with
optional weights, the distribution that spreads keys over them (modula or
ketama) and an epoch that grows with every change. It lives in etcd; a node
whose --memcached and --memcached-distribution match neither it nor the
topology the leader writes with refuses to lead. The first node on a
namespace without one writes its own. The leader takes a change between
rounds: it moves the keys whose server changes, then writes with the new
servers; the applied epoch is the epoch it writes with.`,
		Args: noArgs,
	}
	cmd.AddCommand(newTopologyShowCommand(g), newTopologySetCommand(g), newTopologyResetTermCommand(g))
	return cmd
}

func newTopologyResetTermCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "reset-term",
		Short: "Start the namespace's leadership terms again at 1 (every node stopped)",
		Long: `Every item the coordinator writes carries its leader's term in the high 16
bits of its memcached flags, so a namespace has 65535 terms (one per new
leader); a node that wins a later term refuses to lead and exits, and the
coordinator_term_headroom metric and "status" show how many are left.

reset-term starts the count again. Stop every node first: their processes
must have exited (a paused process is not stopped). It refuses while any
node campaigns or leads, then re-stamps every item of the namespace's
memcached servers with term 0, keeping its value and lifetime (the keys of
the restore record, with --restore-on-restart, and of every server's
listing), sets the term of every restore record to 0, and deletes the term
key, so that the next leader's term is 1. If a node led meanwhile, it fails
and changes no term: stop it and run it again. Readers see no value change.`,
		Example: `  systemctl stop coordinator   # on every node
  coordinator topology reset-term --namespace prod
  systemctl start coordinator`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := g.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			res, err := topology.ResetTerm(cmd.Context(), topology.ResetTermConfig{Etcd: cli, Layout: keyspace.MustNew(g.namespace)})
			if err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(resetTermView{Namespace: g.namespace, ResetTermResult: res})
		},
	}
}

// resetTermView is the output of topology reset-term.
type resetTermView struct {
	Namespace string `json:"namespace"`
	topology.ResetTermResult
}

func (v resetTermView) header() []string {
	return []string{"NAMESPACE", "TERM BEFORE", "KEYS", "RESTAMPED", "RECORDS", "LISTING SHORT"}
}

func (v resetTermView) rows() [][]string {
	short := "-"
	if len(v.ListingShort) > 0 {
		short = strings.Join(v.ListingShort, "; ")
	}
	return [][]string{{v.Namespace, strconv.FormatUint(v.Term, 10), strconv.Itoa(v.Keys), strconv.Itoa(v.Restamped), strconv.Itoa(v.Records), short}}
}

func newTopologyShowCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Short:   "Show the namespace's memcached topology",
		Example: "  coordinator topology show --namespace prod -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := g.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			l := keyspace.MustNew(g.namespace)
			t, err := topology.Get(cmd.Context(), cli, l)
			if err != nil {
				return err
			}
			v := newTopologyView(g.namespace, t)
			if v.AppliedEpoch, v.LastChange, err = appliedEpoch(cmd.Context(), cli, l, t); err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(v)
		},
	}
}

func newTopologySetCommand(g *globalOptions) *cobra.Command {
	var (
		servers string
		dist    distributionFlag
	)
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Change the namespace's memcached topology",
		Long: `Replace the namespace's topology with the given servers and distribution and
bump its epoch. Every server must answer first; nothing is written otherwise.
The leader takes the change between rounds: it stops applying, copies each
key whose server changes to its new server (a newer term already there
wins), deletes it from the old one, records the epoch as applied and applies
again with the new servers. Switch readers once "topology show" reports the
new epoch as applied. Start new nodes with the new --memcached and
--memcached-distribution.`,
		Example: `  coordinator topology set --memcached mc-1:11211,mc-2:11211,mc-3:11211 --memcached-distribution ketama
  coordinator topology set --memcached mc-1:11211=2,mc-2:11211 --memcached-distribution ketama`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			next := topology.Topology{Distribution: dist.value()}
			for _, s := range splitList(servers) {
				srv, err := hashring.ParseServer(s)
				if err != nil {
					return usagef("--memcached: %w", err)
				}
				next.Servers = append(next.Servers, srv)
			}
			if err := next.Validate(); err != nil {
				return usagef("--memcached: %w", err)
			}
			if err := topology.Probe(cmd.Context(), next); err != nil {
				return err
			}
			cli, err := g.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			l := keyspace.MustNew(g.namespace)
			t, err := topology.Set(cmd.Context(), cli, l, next)
			if err != nil {
				return err
			}
			v := newTopologyView(g.namespace, t)
			if v.AppliedEpoch, v.LastChange, err = appliedEpoch(cmd.Context(), cli, l, t); err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(v)
		},
	}
	cmd.Flags().StringVar(&servers, "memcached", "", "memcached servers, host:port or host:port=weight, comma separated, in order")
	cmd.Flags().Var(&dist, "memcached-distribution", "how keys are spread over the servers: modula or ketama")
	_ = cmd.MarkFlagRequired("memcached")
	return cmd
}

// topologyView is the output of topology show and set.
type topologyView struct {
	Namespace    string               `json:"namespace"`
	Distribution string               `json:"distribution"`
	Epoch        uint64               `json:"epoch"`
	Servers      []topologyServerView `json:"servers"`
	// AppliedEpoch is the epoch of the topology the leader writes with;
	// below Epoch while it moves keys to Epoch's (or before any leader
	// took it).
	AppliedEpoch uint64 `json:"applied_epoch"`
	// LastChange is what the change to the applied topology did, the keys
	// it could not move among it; absent when no change was made.
	LastChange *topology.MigrateResult `json:"last_change,omitempty"`
}

// appliedEpoch is the epoch of the namespace's applied topology (t's on a
// namespace where no leader recorded one) and the record of the change
// that made it applied.
func appliedEpoch(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, t topology.Topology) (uint64, *topology.MigrateResult, error) {
	a, found, err := topology.ReadApplied(ctx, cli, l)
	if err != nil || !found {
		return t.Epoch, nil, err
	}
	return a.Applied.Epoch, a.LastChange, nil
}

// topologyServerView is one server of a topologyView.
type topologyServerView struct {
	Addr   string `json:"addr"`
	Weight uint32 `json:"weight"`
}

func newTopologyView(ns string, t topology.Topology) topologyView {
	v := topologyView{Namespace: ns, Distribution: string(t.Distribution), Epoch: t.Epoch}
	for _, s := range t.Servers {
		v.Servers = append(v.Servers, topologyServerView{Addr: s.Addr, Weight: max(s.Weight, 1)})
	}
	return v
}

func (v topologyView) header() []string {
	return []string{"POSITION", "SERVER", "WEIGHT", "DISTRIBUTION", "EPOCH", "APPLIED EPOCH", "UNMOVED"}
}

func (v topologyView) rows() [][]string {
	// UNMOVED is the count of keys the last change left on their old
	// server; -o json names them.
	unmoved := "-"
	if v.LastChange != nil {
		unmoved = strconv.Itoa(v.LastChange.UnmovedCount)
	}
	var rows [][]string
	for i, s := range v.Servers {
		rows = append(rows, []string{strconv.Itoa(i + 1), s.Addr, strconv.FormatUint(uint64(s.Weight), 10), v.Distribution, strconv.FormatUint(v.Epoch, 10), strconv.FormatUint(v.AppliedEpoch, 10), unmoved})
	}
	return rows
}
