package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

func newRegistrationsCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "registrations",
		Aliases: []string{"regs"},
		Short:   "List registrations and the incarnations still draining",
		Long: `List every registration of the namespace: each live registration (status
active) with its incarnation token, the process holding it (host and pid), the
time left on its lease and its pending operations; and every earlier
incarnation that still has operations waiting to be applied (status draining),
with their count. A draining incarnation is no longer listed once all its
operations are applied.`,
		Example: `  coordinator registrations
  coordinator registrations -o json | jq '.registrations[] | select(.status == "draining")'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, done, err := openInspector(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer done()
			regs, err := in.Registrations(cmd.Context())
			if err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(newRegistrationsView(g.namespace, regs))
		},
	}
	return cmd
}

// registrationsView is the output of registrations.
type registrationsView struct {
	Namespace     string            `json:"namespace"`
	Registrations []registrationRow `json:"registrations"`
}

// registrationRow is one incarnation.
type registrationRow struct {
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	// Status is "active" or "draining".
	Status  string `json:"status"`
	Pending int    `json:"pending"`
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

func newRegistrationsView(ns string, regs []inspect.RegistrationView) registrationsView {
	v := registrationsView{Namespace: ns, Registrations: []registrationRow{}}
	for _, r := range regs {
		row := registrationRow{
			Name: r.Name, Incarnation: formatRev(r.Incarnation), Status: r.Status,
			Pending: r.Pending, TTLLeftSeconds: int64(r.TTLLeft / time.Second),
		}
		if r.Status != inspect.StatusDraining {
			row.Holder = &holderView{Host: r.Holder.Host, PID: r.Holder.PID, Started: r.Holder.Started}
		}
		v.Registrations = append(v.Registrations, row)
	}
	return v
}

func (v registrationsView) header() []string {
	return []string{"NAME", "INCARNATION", "STATUS", "HOST", "PID", "TTL LEFT", "PENDING"}
}

func (v registrationsView) rows() [][]string {
	out := make([][]string, 0, len(v.Registrations))
	for _, r := range v.Registrations {
		host, pid, ttl := "-", "-", "-"
		if r.Holder != nil {
			host, pid = orDash(r.Holder.Host), strconv.Itoa(r.Holder.PID)
			ttl = (time.Duration(r.TTLLeftSeconds) * time.Second).String()
		}
		out = append(out, []string{cell(r.Name), r.Incarnation, r.Status, host, pid, ttl, strconv.Itoa(r.Pending)})
	}
	return out
}
