package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
)

// view is what a command prints. Its exported fields, with their JSON tags,
// are the JSON output; header and rows are the table output. JSON field
// names are part of the command-line interface: keep them stable. Every
// token (operation token, incarnation token, applied watermark) is a JSON
// string such as "1234".
type view interface {
	header() []string
	rows() [][]string
}

// printer writes views in the format chosen with -o/--write-out.
type printer interface {
	print(v view) error
}

// newPrinter returns the printer for format, which globalOptions.validate
// has already checked to be "table" or "json".
func newPrinter(format string, w io.Writer) printer {
	if format == "json" {
		return jsonPrinter{w: w}
	}
	return tablePrinter{w: w}
}

// checkOutput checks the -o/--write-out value; its error is a usage error.
func checkOutput(format string) error {
	if format != "table" && format != "json" {
		return usagef("-o/--write-out must be table or json, not %q", format)
	}
	return nil
}

// tablePrinter writes a header row and one row per record, aligned in
// columns.
type tablePrinter struct{ w io.Writer }

func (p tablePrinter) print(v view) error {
	tw := tabwriter.NewWriter(p.w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(v.header(), "\t"))
	for _, r := range v.rows() {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// rowPrinter writes a table one print at a time, as kubectl get --watch
// does: the header with the first rows, then only rows, each column as wide
// as it was first (a longer cell widens only its own row).
type rowPrinter struct {
	w      io.Writer
	widths []int
}

func (p *rowPrinter) print(v view) error {
	rows := v.rows()
	if p.widths == nil {
		rows = append([][]string{v.header()}, rows...)
		for _, r := range rows {
			for i, c := range r {
				if i >= len(p.widths) {
					p.widths = append(p.widths, 0)
				}
				p.widths[i] = max(p.widths[i], len(c))
			}
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 && i < len(p.widths) {
				b.WriteString(strings.Repeat(" ", max(p.widths[i]-len(c), 0)+2))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

// jsonPrinter writes the view as one indented JSON document.
type jsonPrinter struct{ w io.Writer }

func (p jsonPrinter) print(v view) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// cell makes s safe for a table cell: strings that are empty or hold
// whitespace or control characters (possible in records written by
// something other than the coordinator) are shown quoted, so they cannot
// break the columns.
func cell(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return strconv.Quote(s)
		}
	}
	return s
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

// formatRev formats an etcd revision (an incarnation token) the way tokens
// are printed.
func formatRev(rev int64) string { return strconv.FormatInt(rev, 10) }
