package etcdconn_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

func TestValidate(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	pair := ca.Client("me")
	missing := filepath.Join(t.TempDir(), "absent.pem")
	https := []string{"https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name  string
		cfg   etcdconn.Config
		field string
		says  string
	}{
		{"no endpoints", etcdconn.Config{}, "Endpoints", "none"},
		{"bad scheme", etcdconn.Config{Endpoints: []string{"ftp://x:1"}}, "Endpoints", "ftp"},
		{"no host", etcdconn.Config{Endpoints: []string{"https://"}}, "Endpoints", "no host"},
		{"mixed schemes", etcdconn.Config{Endpoints: []string{"http://a:1", "https://b:1"}}, "Endpoints", "one scheme"},
		{"TLS with http", etcdconn.Config{Endpoints: []string{"http://a:1"},
			Security: etcdconn.Security{CACert: ca.CertFile}}, "Endpoints", "https://"},
		{"negative timeout", etcdconn.Config{Endpoints: https, DialTimeout: -1}, "DialTimeout", "negative"},
		{"cert without key", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{Cert: pair.CertFile}}, "Key", "required"},
		{"key without cert", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{Key: pair.KeyFile}}, "Cert", "required"},
		{"password without user", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{Password: "pw"}}, "Username", "required"},
		{"user without password", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{Username: "u"}}, "Password", "required"},
		{"unreadable CA", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{CACert: missing}}, "CACert", missing},
		{"unreadable key", etcdconn.Config{Endpoints: https, Security: etcdconn.Security{Cert: pair.CertFile, Key: missing}}, "Key", missing},
	} {
		err := tc.cfg.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Pkg != "etcdconn" || fe.Field != tc.field || !strings.Contains(fe.Rule, tc.says) {
			t.Errorf("%s: Validate = %v, want a FieldError of %s saying %q", tc.name, err, tc.field, tc.says)
		}
		if _, err := tc.cfg.ClientConfig(); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("%s: ClientConfig = %v, want ErrBadConfig", tc.name, err)
		}
	}
	for _, ok := range []etcdconn.Config{
		{Endpoints: []string{"127.0.0.1:2379"}},
		{Endpoints: []string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}},
		{Endpoints: https, Security: etcdconn.Security{CACert: ca.CertFile, Cert: pair.CertFile, Key: pair.KeyFile,
			Username: "u", Password: "pw"}},
		{Endpoints: []string{"127.0.0.1:2379"}, Security: etcdconn.Security{InsecureSkipTLSVerify: true}},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%v) = %v", ok.Endpoints, err)
		}
	}
}

func TestClientConfig(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	pair := ca.Client("me")
	plain, err := etcdconn.Config{Endpoints: []string{"http://127.0.0.1:2379"}}.ClientConfig()
	if err != nil || plain.TLS != nil || plain.Logger == nil || plain.DialTimeout != etcdconn.DefaultDialTimeout {
		t.Fatalf("plain: %+v, %v; want no TLS, a logger and the default timeout", plain, err)
	}
	// https without a CA: TLS with the system roots.
	sys, err := etcdconn.Config{Endpoints: []string{"https://127.0.0.1:2379"}}.ClientConfig()
	if err != nil || sys.TLS == nil || sys.TLS.RootCAs != nil || sys.TLS.InsecureSkipVerify {
		t.Fatalf("https without CA: %+v, %v; want TLS with the system roots", sys.TLS, err)
	}
	full, err := etcdconn.Config{Endpoints: []string{"127.0.0.1:2379"}, Security: etcdconn.Security{
		CACert: ca.CertFile, Cert: pair.CertFile, Key: pair.KeyFile, Username: "u", Password: "pw"}}.ClientConfig()
	if err != nil || full.TLS == nil || full.TLS.RootCAs == nil || full.Username != "u" || full.Password != "pw" {
		t.Fatalf("full: %v; want TLS with a CA pool and the user", err)
	}
	if full.TLS.GetClientCertificate == nil && len(full.TLS.Certificates) == 0 {
		t.Fatal("full: no client certificate")
	}
	skip, err := etcdconn.Config{Endpoints: []string{"https://a:1"}, Security: etcdconn.Security{InsecureSkipTLSVerify: true}}.ClientConfig()
	if err != nil || skip.TLS == nil || !skip.TLS.InsecureSkipVerify {
		t.Fatalf("skip verify: %v", err)
	}
}

// Files that are not what their field needs are refused by Validate,
// naming the field.
func TestValidateFileContents(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	pair, other := ca.Client("me"), ca.Client("other")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sec   etcdconn.Security
		field string
	}{
		{etcdconn.Security{CACert: junk}, "CACert"},
		{etcdconn.Security{Cert: pair.CertFile, Key: other.KeyFile}, "Cert"},
		{etcdconn.Security{Cert: junk, Key: pair.KeyFile}, "Cert"},
	} {
		err := tc.sec.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%v) = %v, want a FieldError of %s", tc.sec, err, tc.field)
		}
	}
}

func TestPasswordNeverPrinted(t *testing.T) {
	s := etcdconn.Security{Username: "agent-7", Password: "hunter2"}
	for _, out := range []string{s.String(), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "agent-7") {
			t.Errorf("printed %q: want the user and not the password", out)
		}
	}
	err := etcdconn.Config{Endpoints: []string{"ftp://x"}, Security: s}.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate = %v", err)
	}
}

func TestParseUser(t *testing.T) {
	for in, want := range map[string][2]string{
		"agent-7:pw":   {"agent-7", "pw"},
		"agent-7":      {"agent-7", ""},
		"a:pw:with:co": {"a", "pw:with:co"},
		"":             {"", ""},
	} {
		if u, p := etcdconn.ParseUser(in); u != want[0] || p != want[1] {
			t.Errorf("ParseUser(%q) = %q, %q, want %q, %q", in, u, p, want[0], want[1])
		}
	}
}

// ReadPasswordFile returns the file's one line without its line ending;
// anything else is ErrPasswordFile, and no error holds the file's content.
func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for content, want := range map[string]string{
		"hunter2":         "hunter2",
		"hunter2\n":       "hunter2",
		"hunter2\r\n":     "hunter2",
		"hunter2\n\n":     "hunter2",
		" pass phrase \n": " pass phrase ",
		"pa:ss\x00wörd\n": "pa:ss\x00wörd",
	} {
		got, err := etcdconn.ReadPasswordFile(write("ok", content))
		if err != nil || got != want {
			t.Errorf("ReadPasswordFile(%q) = %q, %v, want %q", content, got, err, want)
		}
	}
	const secret = "s3cret-in-file"
	missing := filepath.Join(dir, "absent")
	for _, tc := range []struct {
		name, path, says string
		cause            error
	}{
		{"missing", missing, missing, os.ErrNotExist},
		{"a directory", dir, dir, nil},
		{"empty", write("empty", ""), "holds no password", nil},
		{"only a newline", write("newline", "\n"), "holds no password", nil},
		{"two lines", write("two", secret+"\n"+secret+"\n"), "more than one line", nil},
		{"too large", write("large", strings.Repeat(secret, 1000)), "over 4096 bytes", nil},
	} {
		_, err := etcdconn.ReadPasswordFile(tc.path)
		if !errors.Is(err, etcdconn.ErrPasswordFile) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want ErrPasswordFile saying %q", tc.name, err, tc.says)
		}
		if tc.cause != nil && !errors.Is(err, tc.cause) {
			t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.cause)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v holds the file's content", tc.name, err)
		}
	}
}
