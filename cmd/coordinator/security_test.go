package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every verb checks the etcd security flags before dialling: bad
// combinations are usage errors naming the flag, and no output holds the
// password.
func TestSecurityFlagsAreCheckedByEveryVerb(t *testing.T) {
	const pw = "pw-never-shown"
	missing := filepath.Join(t.TempDir(), "absent.pem")
	pwFile := writeFile(t, "pw", pw+"\n")
	emptyFile := writeFile(t, "empty", "\n")
	twoLines := writeFile(t, "two", pw+"\n"+pw+"\n")
	verbs := [][]string{
		{"serve", "--node-id", "n1"},
		{"submit", "--as", "a", "set", "k", "v"},
		{"status"}, {"registrations"}, {"ops"},
		{"bench", "--memcached", "127.0.0.1:1"},
	}
	flags := []struct {
		args []string
		says string
	}{
		{[]string{"--endpoints", "https://127.0.0.1:1", "--cert", missing}, "--cert needs --key"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--key", missing}, "--key needs --cert"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--cacert", missing}, "--cacert"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--password", pw}, "--password needs --user"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u"}, "--password"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u:" + pw, "--password", pw}, "--password"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--password-file", pwFile}, "--password-file needs --user"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u:" + pw, "--password-file", pwFile},
			`--user "u" holds a password and --password-file is set`},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u", "--password", pw, "--password-file", pwFile},
			"--password-file and --password"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u", "--password-file", missing}, "--password-file: "},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u", "--password-file", emptyFile}, "holds no password"},
		{[]string{"--endpoints", "https://127.0.0.1:1", "--user", "u", "--password-file", twoLines}, "more than one line"},
		{[]string{"--endpoints", "http://127.0.0.1:1", "--insecure-skip-tls-verify"}, "--endpoints"},
		{[]string{"--endpoints", "ftp://127.0.0.1:1"}, "--endpoints"},
	}
	for _, v := range verbs {
		for _, f := range flags {
			args := append(append([]string{}, v...), f.args...)
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			code := run(ctx, args, strings.NewReader(""), &out, &errOut)
			cancel()
			if code != exitUsage || !strings.Contains(errOut.String(), f.says) {
				t.Errorf("%q: exit %d, want %d saying %q; stderr:\n%s", args, code, exitUsage, f.says, errOut.String())
			}
			if strings.Contains(out.String()+errOut.String(), pw) {
				t.Errorf("%q: output holds the password:\n%s%s", args, out.String(), errOut.String())
			}
		}
	}
}

// A wrong password against nothing listening is an unreachable etcd, and
// the error does not hold the password.
func TestDialErrorHoldsNoPassword(t *testing.T) {
	const pw = "pw-never-shown"
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"status", "--endpoints", "http://127.0.0.1:1",
		"--dial-timeout", "300ms", "--user", "u:" + pw}, strings.NewReader(""), &out, &errOut)
	if code != exitFailure || !strings.Contains(errOut.String(), "does not answer") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), pw) {
		t.Fatalf("output holds the password:\n%s", errOut.String())
	}
}

// writeFile writes content to a file of the test's own and returns its
// path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// --password-file gives the password: against nothing listening the verb
// gets as far as dialling, and neither the output nor the error holds the
// password. COORDINATOR_PASSWORD_FILE does the same; a password from
// COORDINATOR_PASSWORD beside --password-file is misuse.
func TestPasswordFile(t *testing.T) {
	const pw = "pw-from-a-file"
	pwFile := writeFile(t, "pw", pw+"\r\n")
	dialArgs := []string{"status", "--endpoints", "http://127.0.0.1:1", "--dial-timeout", "300ms", "--user", "u"}
	check := func(what string, args []string, code int, says string) {
		t.Helper()
		var out, errOut bytes.Buffer
		got := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
		if got != code || !strings.Contains(errOut.String(), says) {
			t.Errorf("%s: exit %d, want %d saying %q; stderr:\n%s", what, got, code, says, errOut.String())
		}
		if strings.Contains(out.String()+errOut.String(), pw) {
			t.Errorf("%s: output holds the password:\n%s%s", what, out.String(), errOut.String())
		}
	}
	check("--password-file", append(dialArgs, "--password-file", pwFile), exitFailure, "does not answer")

	t.Setenv("COORDINATOR_PASSWORD_FILE", pwFile)
	check("$COORDINATOR_PASSWORD_FILE", dialArgs, exitFailure, "does not answer")
	os.Unsetenv("COORDINATOR_PASSWORD_FILE")

	t.Setenv("COORDINATOR_PASSWORD", pw)
	check("$COORDINATOR_PASSWORD and --password-file", append(dialArgs, "--password-file", pwFile), exitUsage,
		"--password-file and --password ($COORDINATOR_PASSWORD)")
}

// The password read from --password-file is the one etcd gets.
func TestPasswordFileGivesThePassword(t *testing.T) {
	g := &globalOptions{
		endpoints: "http://127.0.0.1:1", namespace: "default", output: "table",
		user: "agent-7", passwordFile: writeFile(t, "pw", "hunter2\n"),
	}
	if err := g.validate(); err != nil {
		t.Fatal(err)
	}
	if sec := g.conn().Security; sec.Username != "agent-7" || sec.Password != "hunter2" {
		t.Fatalf("security %v: want agent-7 with the file's password", sec)
	}
}

// redactArgs hides every password of a command line and nothing else.
func TestRedactArgs(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"coordinator", "serve", "--password", "pw", "--user", "u"},
			[]string{"coordinator", "serve", "--password", redactedValue, "--user", "u"}},
		{[]string{"coordinator", "serve", "--password=pw", "--user=u:pw2"},
			[]string{"coordinator", "serve", "--password=" + redactedValue, "--user=u:" + redactedValue}},
		{[]string{"coordinator", "status", "--user", "u:pw:with:colons", "--password-file", "/etc/pw"},
			[]string{"coordinator", "status", "--user", "u:" + redactedValue, "--password-file", "/etc/pw"}},
		{[]string{"coordinator", "submit", "--as", "a", "set", "k", "--", "--password", "value"},
			[]string{"coordinator", "submit", "--as", "a", "set", "k", "--", "--password", "value"}},
		{[]string{"coordinator", "serve", "--password"}, []string{"coordinator", "serve", "--password"}},
	} {
		in := slices.Clone(tc.in)
		got, changed := redactArgs(in)
		if !slices.Equal(got, tc.want) || changed != !slices.Equal(tc.in, tc.want) {
			t.Errorf("redactArgs(%q) = %q, %v; want %q", tc.in, got, changed, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("redactArgs(%q) changed its argument to %q", tc.in, in)
		}
	}
	plain := []string{"coordinator", "serve", "--user", "u", "--password-file", "/etc/pw"}
	if got, changed := redactArgs(plain); changed || &got[0] != &plain[0] {
		t.Errorf("redactArgs(%q) made a copy with nothing to redact", plain)
	}
}
