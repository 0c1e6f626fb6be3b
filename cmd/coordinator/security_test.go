package main

import (
	"bytes"
	"context"
	"path/filepath"
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
