package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// maxCellWidth bounds a table cell, in characters: a longer value is cut
// and ends in "…", so that one long value (a holder host, a key) neither
// widens every row of its column nor makes a row unbounded. The JSON output
// keeps every value whole.
const maxCellWidth = 64

// cut returns s cut to maxCellWidth characters, the last of them "…".
func cut(s string) string {
	if utf8.RuneCountInString(s) <= maxCellWidth {
		return s
	}
	n := 0
	for i := range s {
		if n == maxCellWidth-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// cutRow returns r with every cell cut.
func cutRow(r []string) []string {
	out := make([]string, len(r))
	for i, c := range r {
		out[i] = cut(c)
	}
	return out
}

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
// columns, every cell cut to maxCellWidth.
type tablePrinter struct{ w io.Writer }

func (p tablePrinter) print(v view) error {
	tw := tabwriter.NewWriter(p.w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cutRow(v.header()), "\t"))
	for _, r := range v.rows() {
		fmt.Fprintln(tw, strings.Join(cutRow(r), "\t"))
	}
	return tw.Flush()
}

// rowPrinter writes a table one print at a time, as kubectl get --watch
// does: the header with the first rows, then only rows, each column as wide
// as it was first (a longer cell widens only its own row). Cells are cut to
// maxCellWidth, so every row is bounded however long the values.
type rowPrinter struct {
	w      io.Writer
	widths []int
	// ctx, when set, is checked before each row: once it ends, print
	// returns its cause with the rest of the rows unwritten.
	ctx context.Context
}

func (p *rowPrinter) print(v view) error {
	return p.printRows(v.header(), v.rows())
}

// printRows writes rows, after header when nothing was written yet.
func (p *rowPrinter) printRows(header []string, rows [][]string) error {
	if p.widths == nil {
		rows = append([][]string{header}, rows...)
		p.widths = make([]int, 0, len(header))
		for _, r := range rows {
			for i, c := range r {
				if i >= len(p.widths) {
					p.widths = append(p.widths, 0)
				}
				p.widths[i] = max(p.widths[i], utf8.RuneCountInString(cut(c)))
			}
		}
	}
	var b strings.Builder
	for _, r := range rows {
		if p.ctx != nil && p.ctx.Err() != nil {
			return context.Cause(p.ctx)
		}
		b.Reset()
		for i, c := range r {
			c = cut(c)
			b.WriteString(c)
			if i < len(r)-1 && i < len(p.widths) {
				b.WriteString(strings.Repeat(" ", max(p.widths[i]-utf8.RuneCountInString(c), 0)+2))
			}
		}
		b.WriteByte('\n')
		if _, err := io.WriteString(p.w, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// field is one member of a JSON object.
type field struct {
	name  string
	value any
}

// listPrinter writes a listing that is read a page at a time as it comes,
// so that nothing holds the whole listing: a table whose columns are as
// wide as the first page needs (rowPrinter), or one JSON object whose
// array of rows is written row by row. Between rows it checks its context,
// and once that ends it stops with the context's cause (the signal that
// interrupted the command).
type listPrinter struct {
	ctx    context.Context
	w      io.Writer
	format string
	header []string // table header
	array  string   // JSON name of the rows' array
	head   []field  // JSON members before the array

	rows    *rowPrinter
	started bool
	n       int // JSON rows written
}

// newListPrinter returns the printer of a listing in format ("table" or
// "json"): the table's header; the JSON object's members before the rows,
// and the name of the rows' array.
func newListPrinter(ctx context.Context, format string, w io.Writer, header []string, head []field, array string) *listPrinter {
	return &listPrinter{
		ctx: ctx, w: w, format: format, header: header, array: array, head: head,
		rows: &rowPrinter{w: w, ctx: ctx},
	}
}

// page writes one page: items are the rows as JSON values, rows as table
// cells.
func (p *listPrinter) page(items []any, rows [][]string) error {
	if p.format != "json" {
		return p.rows.printRows(p.header, rows)
	}
	if err := p.begin(); err != nil {
		return err
	}
	for _, it := range items {
		if p.ctx.Err() != nil {
			return context.Cause(p.ctx)
		}
		b, err := json.MarshalIndent(it, "    ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n    "
		if p.n == 0 {
			sep = "\n    "
		}
		if _, err := io.WriteString(p.w, sep+string(b)); err != nil {
			return err
		}
		p.n++
	}
	return nil
}

// end finishes the listing: a table with no rows gets its header, a JSON
// object its array's end and tail, the members after the array.
func (p *listPrinter) end(tail []field) error {
	if p.format != "json" {
		if p.rows.widths == nil {
			return p.rows.printRows(p.header, nil)
		}
		return nil
	}
	if err := p.begin(); err != nil {
		return err
	}
	var b strings.Builder
	if p.n > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]")
	for _, f := range tail {
		b.WriteString(",")
		if err := writeMember(&b, f); err != nil {
			return err
		}
	}
	b.WriteString("\n}\n")
	_, err := io.WriteString(p.w, b.String())
	return err
}

// begin writes the JSON object's start, once: the head members and the
// array's start.
func (p *listPrinter) begin() error {
	if p.started {
		return nil
	}
	p.started = true
	var b strings.Builder
	b.WriteString("{")
	for i, f := range p.head {
		if i > 0 {
			b.WriteString(",")
		}
		if err := writeMember(&b, f); err != nil {
			return err
		}
	}
	name, _ := json.Marshal(p.array)
	if len(p.head) > 0 {
		b.WriteString(",")
	}
	b.WriteString("\n  " + string(name) + ": [")
	_, err := io.WriteString(p.w, b.String())
	return err
}

// writeMember writes a member of an object at the top level as json.Encoder
// with a two-space indent writes it, without its separating comma.
func writeMember(b *strings.Builder, f field) error {
	name, err := json.Marshal(f.name)
	if err != nil {
		return err
	}
	v, err := json.MarshalIndent(f.value, "  ", "  ")
	if err != nil {
		return err
	}
	b.WriteString("\n  " + string(name) + ": " + string(v))
	return nil
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
