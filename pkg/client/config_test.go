package client

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("New without etcd = %v, want ErrBadConfig", err)
	}
	_, err := New(Config{Namespace: "a/b", Endpoints: []string{"127.0.0.1:1"}})
	if !errors.Is(err, ErrBadConfig) || !errors.Is(err, ErrInvalidName) {
		t.Errorf("New with a bad namespace = %v, want ErrBadConfig and ErrInvalidName", err)
	}
}

func TestConfigsRefuseShortTTL(t *testing.T) {
	for name, err := range map[string]error{
		"RegisterConfig": (&RegisterConfig{TTL: 500 * time.Millisecond}).Validate(),
		"SessionConfig":  (&SessionConfig{TTL: 500 * time.Millisecond}).Validate(),
	} {
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "TTL") {
			t.Errorf("%s with a TTL of 500ms: %v, want ErrBadConfig naming TTL", name, err)
		}
	}
	for name, err := range map[string]error{
		"RegisterConfig": (&RegisterConfig{}).Validate(),
		"SessionConfig":  (&SessionConfig{}).Validate(),
	} {
		if err != nil {
			t.Errorf("zero %s: %v, want nil", name, err)
		}
	}
}
