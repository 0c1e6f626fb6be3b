package main

import (
	"strconv"

	"github.com/spf13/cobra"

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
ketama) and an epoch that grows with every change. It lives in etcd; every
node's --memcached and --memcached-distribution must match it, or the node
refuses to lead. The first node on a namespace without one writes its own.`,
		Args: noArgs,
	}
	cmd.AddCommand(newTopologyShowCommand(g), newTopologySetCommand(g))
	return cmd
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
			t, err := topology.Get(cmd.Context(), cli, keyspace.MustNew(g.namespace))
			if err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(newTopologyView(g.namespace, t))
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
A leader whose servers differ stops leading and its node exits, and nodes
with other servers refuse to lead: restart them with the new --memcached and
--memcached-distribution. Keys whose server changes are not
moved: a reader of the new topology misses them until they are written again.`,
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
			t, err := topology.Set(cmd.Context(), cli, keyspace.MustNew(g.namespace), next)
			if err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(newTopologyView(g.namespace, t))
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
	return []string{"POSITION", "SERVER", "WEIGHT", "DISTRIBUTION", "EPOCH"}
}

func (v topologyView) rows() [][]string {
	var rows [][]string
	for i, s := range v.Servers {
		rows = append(rows, []string{strconv.Itoa(i + 1), s.Addr, strconv.FormatUint(uint64(s.Weight), 10), v.Distribution, strconv.FormatUint(v.Epoch, 10)})
	}
	return rows
}
