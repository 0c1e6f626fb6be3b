package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

func newOpsCommand(g *globalOptions) *cobra.Command {
	o := &pageOptions{}
	cmd := &cobra.Command{
		Use:   "ops",
		Short: "List pending operations in token order",
		Long: `List the operations waiting to be applied to memcached, in the order the
leader applies them: by token, then by position in the batch (INDEX). Each
shows the registration name and incarnation that submitted it, the operation,
the key and the size of the value.

The operations are read from etcd a page at a time (--page-size) and each
page is printed as it arrives; Ctrl-C stops the listing at once. Table cells
hold at most 64 characters, longer values ending in "…"; -o json shows them
whole.

With --limit N only the first N are listed, with the token to go on with
(--page-token): on standard error for a table, as "next_page_token" in JSON
(empty when the listing is complete). The JSON output's "total" is the
number pending, as status counts it: with more than 1000 batches pending it
is a lower bound and "total_lower_bound" is true. Pending records
that cannot be decoded are reported on standard error (table) or under
"undecodable" (JSON).`,
		Example: `  coordinator ops
  coordinator ops --limit 20
  coordinator ops --limit 20 --page-token TOKEN
  coordinator ops -o json | jq -r '.ops[].key'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			in, done, err := openInspector(ctx, g)
			if err != nil {
				return err
			}
			defer done()
			count, err := in.CountPending(ctx)
			if err != nil {
				return err
			}
			p := newListPrinter(ctx, g.output, cmd.OutOrStdout(), opsHeader,
				[]field{{"namespace", g.namespace}, {"total", count.Ops}, {"total_lower_bound", count.OpsLowerBound}}, "ops")
			shown := 0
			undecodable := []string{}
			next, err := o.walk(ctx, func(req inspect.PageRequest) (int, string, error) {
				page, err := in.OpsPage(ctx, req)
				if err != nil {
					return 0, "", err
				}
				rows := opRows(page.Ops)
				items := make([]any, len(rows))
				for i, r := range rows {
					items[i] = r
				}
				shown += len(rows)
				undecodable = append(undecodable, page.Undecodable...)
				if g.output == "table" {
					for _, k := range page.Undecodable {
						fmt.Fprintf(cmd.ErrOrStderr(), "Warning: pending record %q cannot be decoded\n", k)
					}
				}
				return len(rows), page.NextToken, p.page(items, opTableRows(rows))
			})
			if err != nil {
				return err
			}
			if err := p.end([]field{{"undecodable", undecodable}, {"next_page_token", next}}); err != nil {
				return err
			}
			if g.output == "table" && next != "" {
				of := strconv.Itoa(count.Ops)
				if count.OpsLowerBound {
					of = "at least " + of
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%d of %s pending operations shown\n", shown, of)
			}
			printNext(cmd, g.output, next)
			return nil
		},
	}
	o.addFlags(cmd, "operations")
	return cmd
}

// opsView is the JSON output of ops, which listPrinter writes a page at a
// time.
type opsView struct {
	Namespace string `json:"namespace"`
	// Total is the number of pending operations, listed or not, as
	// inspect.CountPending counts them; TotalLowerBound reports that it is
	// a lower bound.
	Total           int      `json:"total"`
	TotalLowerBound bool     `json:"total_lower_bound"`
	Ops             []opRow  `json:"ops"`
	Undecodable     []string `json:"undecodable"`
	// NextPageToken lists the operations after these (--page-token);
	// empty when the listing is complete.
	NextPageToken string `json:"next_page_token"`
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

// opRows returns the output rows of ops.
func opRows(ops []inspect.PendingOp) []opRow {
	out := make([]opRow, 0, len(ops))
	for _, p := range ops {
		out = append(out, opRow{
			Token: p.Token.String(), Index: p.Index, Name: p.Name, Incarnation: formatRev(p.Incarnation),
			Op: p.Op, Key: p.Key, ValueBytes: p.ValueBytes,
		})
	}
	return out
}

// opsHeader is the header of the ops table.
var opsHeader = []string{"TOKEN", "INDEX", "NAME", "INCARNATION", "OP", "KEY", "VALUE BYTES"}

// opTableRows returns the table cells of rows.
func opTableRows(rows []opRow) [][]string {
	out := make([][]string, 0, len(rows))
	for _, o := range rows {
		out = append(out, []string{
			o.Token, strconv.Itoa(o.Index), cell(o.Name), o.Incarnation, o.Op, cell(o.Key), strconv.Itoa(o.ValueBytes),
		})
	}
	return out
}
