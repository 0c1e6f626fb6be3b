package client

import (
	"errors"
	"testing"
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
