package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// promSample is one sample of a Prometheus text exposition.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// promSamples are the samples of one scrape.
type promSamples []promSample

// sum adds up the samples named name whose labels include every pair of
// match (label, value, label, value, ...); found is false when none
// matched.
func (ps promSamples) sum(name string, match ...string) (total float64, found bool) {
next:
	for _, s := range ps {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				continue next
			}
		}
		total += s.value
		found = true
	}
	return total, found
}

// parsePromText reads the samples of a Prometheus text exposition (format
// 0.0.4): `name{label="value",...} value [timestamp]` lines, comments and
// blank lines skipped. A line it cannot read is an error.
func parsePromText(r io.Reader) (promSamples, error) {
	var out promSamples
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w: %q", n, err, line)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func parsePromLine(line string) (promSample, error) {
	s := promSample{}
	end := strings.IndexAny(line, "{ \t")
	if end <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.name, line = line[:end], line[end:]
	if line[0] == '{' {
		labels, rest, err := parsePromLabels(line[1:])
		if err != nil {
			return s, err
		}
		s.labels, line = labels, rest
	}
	fields := strings.Fields(line)
	if len(fields) < 1 || len(fields) > 2 {
		return s, fmt.Errorf("want a value and at most a timestamp")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// parsePromLabels reads `name="value",...}` and returns the labels and
// what follows the closing brace. Values may hold \\, \" and \n escapes.
func parsePromLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return nil, "", fmt.Errorf("bad label")
		}
		name := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s, closed = s[i+1:], true
				break
			}
			v.WriteByte(c)
		}
		if !closed {
			return nil, "", fmt.Errorf("unterminated label value")
		}
		labels[name] = v.String()
	}
}

// scrapeTimeout bounds one scrape of a /metrics page.
const scrapeTimeout = 10 * time.Second

// scrape reads the Prometheus metrics at url.
func scrape(ctx context.Context, url string) (promSamples, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parsePromText(resp.Body)
}

// fleetWaitKept waits until the node keeps at least n registrations
// alive (coordinator_api_kept_alive): the API callers' Clients add theirs
// to their keep-alive streams once registered, and the idle window counts
// the renewals from then on.
func (r *runner) fleetWaitKept(ctx context.Context, s *fleetServers, n int) error {
	ctx, cancel := context.WithTimeout(ctx, fleetWaitTimeout)
	defer cancel()
	for {
		m, err := scrape(ctx, s.nodeMetrics)
		if err != nil {
			return err
		}
		if got, _ := m.sum("coordinator_api_kept_alive"); got >= float64(n) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the node does not keep %d registrations alive: %w", n, ctx.Err())
		case <-time.After(fleetPoll):
		}
	}
}
