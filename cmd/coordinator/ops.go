package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

type opsOptions struct {
	limit int
}

func newOpsCommand(g *globalOptions) *cobra.Command {
	o := &opsOptions{}
	cmd := &cobra.Command{
		Use:   "ops",
		Short: "List pending operations in token order",
		Long: `List the operations waiting to be applied to memcached, in the order the
leader applies them: by token, then by position in the batch (INDEX). Each
shows the registration name and incarnation that submitted it, the operation,
the key and the size of the value.

With --limit N only the first N are listed; the JSON output's "total" is the
number pending. Pending records that cannot be decoded are reported on
standard error (table) or under "undecodable" (JSON).`,
		Example: `  coordinator ops
  coordinator ops --limit 20
  coordinator ops -o json | jq -r '.ops[].key'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.limit < 0 {
				return usagef("--limit must not be negative (got %d)", o.limit)
			}
			in, done, err := openInspector(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer done()
			page, err := in.PendingOpsFirst(cmd.Context(), o.limit)
			if err != nil {
				return err
			}
			v := newOpsView(g.namespace, page)
			if err := newPrinter(g.output, cmd.OutOrStdout()).print(v); err != nil {
				return err
			}
			if g.output == "table" {
				if len(v.Ops) < v.Total {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d of %d pending operations shown\n", len(v.Ops), v.Total)
				}
				for _, k := range v.Undecodable {
					fmt.Fprintf(cmd.ErrOrStderr(), "Warning: pending record %q cannot be decoded\n", k)
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&o.limit, "limit", 0, "list at most this many operations (0: all)")
	return cmd
}

// opsView is the output of ops.
type opsView struct {
	Namespace string `json:"namespace"`
	// Total is the number of pending operations, listed or not.
	Total       int      `json:"total"`
	Ops         []opRow  `json:"ops"`
	Undecodable []string `json:"undecodable"`
}

// opRow is one pending operation.
type opRow struct {
	Token       string `json:"token"`
	Index       int    `json:"index"`
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Op          string `json:"op"`
	Key         string `json:"key"`
	ValueBytes  int    `json:"value_bytes"`
}

func newOpsView(ns string, page inspect.PendingOpsPage) opsView {
	v := opsView{Namespace: ns, Total: page.Total, Ops: []opRow{}, Undecodable: []string{}}
	for _, p := range page.Ops {
		v.Ops = append(v.Ops, opRow{
			Token: p.Token.String(), Index: p.Index, Name: p.Name, Incarnation: formatRev(p.Incarnation),
			Op: p.Op, Key: p.Key, ValueBytes: p.ValueBytes,
		})
	}
	v.Undecodable = append(v.Undecodable, page.Undecodable...)
	return v
}

func (v opsView) header() []string {
	return []string{"TOKEN", "INDEX", "NAME", "INCARNATION", "OP", "KEY", "VALUE BYTES"}
}

func (v opsView) rows() [][]string {
	out := make([][]string, 0, len(v.Ops))
	for _, o := range v.Ops {
		out = append(out, []string{
			o.Token, strconv.Itoa(o.Index), cell(o.Name), o.Incarnation, o.Op, cell(o.Key), strconv.Itoa(o.ValueBytes),
		})
	}
	return out
}
