package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

// pageOptions are the paging flags of the listings (registrations, ops).
type pageOptions struct {
	limit     int
	pageSize  int
	pageToken string
}

// addFlags adds --limit, --page-size and --page-token; what names the rows.
func (o *pageOptions) addFlags(cmd *cobra.Command, what string) {
	cmd.Flags().IntVar(&o.limit, "limit", 0, "list at most this many "+what+" (0: all)")
	cmd.Flags().IntVar(&o.pageSize, "page-size", 0,
		fmt.Sprintf("read %s from etcd this many at a time (0: %d, at most %d)", what, inspect.DefaultPageSize, inspect.MaxPageSize))
	cmd.Flags().StringVar(&o.pageToken, "page-token", "",
		"start where an earlier listing stopped: its next_page_token (JSON) or the token it printed")
}

// validate checks the flags; errors are usage errors.
func (o *pageOptions) validate() error {
	switch {
	case o.limit < 0:
		return usagef("--limit must not be negative (got %d)", o.limit)
	case o.pageSize < 0 || o.pageSize > inspect.MaxPageSize:
		return usagef("--page-size must be within 0..%d (got %d)", inspect.MaxPageSize, o.pageSize)
	}
	if err := (inspect.PageRequest{Token: o.pageToken}).Validate(); err != nil {
		return usageMsg("--page-token: not the token of an earlier listing of this command", err)
	}
	return nil
}

// walk calls read with each page request in turn, from --page-token on,
// until the listing ends or --limit rows were read (read returns how many
// rows its page held and the next token), and returns the token of the
// rest: empty when the listing was read to its end. The last page asks for
// no more rows than --limit leaves, so that the token left is exactly where
// the output stopped.
func (o *pageOptions) walk(ctx context.Context, read func(inspect.PageRequest) (int, string, error)) (string, error) {
	req := inspect.PageRequest{Size: o.pageSize, Token: o.pageToken}
	size := cmp.Or(o.pageSize, inspect.DefaultPageSize)
	left := o.limit
	for {
		if o.limit > 0 {
			req.Size = min(size, left)
		}
		n, next, err := read(req)
		switch {
		case ctx.Err() != nil:
			return "", context.Cause(ctx)
		case errors.Is(err, inspect.ErrBadPageToken):
			return "", usageMsg("--page-token: not the token of an earlier listing of this command", err)
		case err != nil:
			return "", err
		}
		left -= n
		if next == "" || (o.limit > 0 && left <= 0) {
			return next, nil
		}
		req.Token = next
	}
}

func newRegistrationsCommand(g *globalOptions) *cobra.Command {
	o := &pageOptions{}
	cmd := &cobra.Command{
		Use:     "registrations",
		Aliases: []string{"regs"},
		Short:   "List registrations and the incarnations still draining",
		Long: `List every registration of the namespace: each live registration (status
active) with its incarnation token, the process holding it (host and pid), the
time left on its lease and its pending operations; and every earlier
incarnation that still has operations waiting to be applied (status draining),
with their count. A draining incarnation is no longer listed once all its
operations are applied. Rows are sorted by name, then incarnation. A page
reads at most 1000 pending batches to count their operations (the small
incarnations' first) and counts one for each other batch: such a count is a
lower bound, shown ending in "+" (pending_lower_bound in JSON).

The registrations are read from etcd a page at a time (--page-size) and each
page is printed as it arrives, so a namespace of any size is listed in
bounded memory; Ctrl-C stops the listing at once. Table cells hold at most
64 characters, longer values ending in "…"; -o json shows them whole.

With --limit N the listing stops after N rows and gives the token to go on
with (--page-token): on standard error for a table, as "next_page_token" in
JSON (empty when the listing is complete). Pages are read one after the
other, not as one snapshot: a registration made or gone meanwhile may be
missed or shown, every other is shown exactly once.`,
		Example: `  coordinator registrations
  coordinator registrations -o json | jq '.registrations[] | select(.status == "draining")'
  coordinator registrations --limit 100
  coordinator registrations --limit 100 --page-token TOKEN`,
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
			p := newListPrinter(ctx, g.output, cmd.OutOrStdout(), registrationsHeader,
				[]field{{"namespace", g.namespace}}, "registrations")
			next, err := o.walk(ctx, func(req inspect.PageRequest) (int, string, error) {
				page, err := in.RegistrationsPage(ctx, req)
				if err != nil {
					return 0, "", err
				}
				rows := registrationRows(page.Registrations)
				items := make([]any, len(rows))
				for i, r := range rows {
					items[i] = r
				}
				return len(rows), page.NextToken, p.page(items, tableRows(rows))
			})
			if err != nil {
				return err
			}
			if err := p.end([]field{{"next_page_token", next}}); err != nil {
				return err
			}
			printNext(cmd, g.output, next)
			return nil
		},
	}
	o.addFlags(cmd, "registrations")
	return cmd
}

// printNext tells, under a table, the token that lists the rest.
func printNext(cmd *cobra.Command, format, next string) {
	if format == "table" && next != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "More to list: --page-token %s\n", next)
	}
}

// registrationsView is the JSON output of registrations, which listPrinter
// writes a page at a time.
type registrationsView struct {
	Namespace     string            `json:"namespace"`
	Registrations []registrationRow `json:"registrations"`
	// NextPageToken lists the rows after these (--page-token); empty when
	// the listing is complete.
	NextPageToken string `json:"next_page_token"`
}

// registrationRow is one incarnation.
type registrationRow struct {
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	// Status is "active" or "draining".
	Status string `json:"status"`
	// Pending counts the pending operations; PendingLowerBound reports
	// that it is a lower bound (see inspect.RegistrationView).
	Pending           int  `json:"pending"`
	PendingLowerBound bool `json:"pending_lower_bound"`
	// Holder is the process holding an active registration; null when
	// draining.
	Holder         *holderView `json:"holder"`
	TTLLeftSeconds int64       `json:"ttl_left_seconds"`
}

// holderView is the process that holds a registration.
type holderView struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// registrationRows returns the output rows of regs.
func registrationRows(regs []inspect.RegistrationView) []registrationRow {
	out := make([]registrationRow, 0, len(regs))
	for _, r := range regs {
		row := registrationRow{
			Name: r.Name, Incarnation: formatRev(r.Incarnation), Status: r.Status,
			Pending: r.Pending, PendingLowerBound: r.PendingLowerBound, TTLLeftSeconds: int64(r.TTLLeft / time.Second),
		}
		if r.Status != inspect.StatusDraining {
			row.Holder = &holderView{Host: r.Holder.Host, PID: r.Holder.PID, Started: r.Holder.Started}
		}
		out = append(out, row)
	}
	return out
}

// registrationsHeader is the header of the registrations table.
var registrationsHeader = []string{"NAME", "INCARNATION", "STATUS", "HOST", "PID", "TTL LEFT", "PENDING"}

// tableRows returns the table cells of rows.
func tableRows(rows []registrationRow) [][]string {
	out := make([][]string, 0, len(rows))
	for _, r := range rows {
		host, pid, ttl := "-", "-", "-"
		if r.Holder != nil {
			host, pid = orDash(r.Holder.Host), strconv.Itoa(r.Holder.PID)
			ttl = (time.Duration(r.TTLLeftSeconds) * time.Second).String()
		}
		pending := strconv.Itoa(r.Pending)
		if r.PendingLowerBound {
			pending += "+"
		}
		out = append(out, []string{cell(r.Name), r.Incarnation, r.Status, host, pid, ttl, pending})
	}
	return out
}
