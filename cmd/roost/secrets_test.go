package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// setUpMember parses and loads a node's flags as roost node does, and checks its secrets.
func setUpMember(t *testing.T, args ...string) error {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(devNull{})
	m := memberFlags(fs, ":9000")
	nodeFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := m.load(); err != nil {
		return err
	}
	return m.checkSecrets(fs)
}

type devNull struct{}

func (devNull) Write(b []byte) (int, error) { return len(b), nil }

func TestSecretsRefused(t *testing.T) {
	good := "0123456789abcdef-a-real-one"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error; "" for none
	}{
		{"open", nil, nil, ""},
		{"a real secret", nil, []string{"--cluster-secret", good}, ""},
		{"a real secret from env", map[string]string{"ROOST_CLUSTER_SECRET": good}, nil, ""},
		{"auth with a secret", nil, []string{"--auth-hmac-secret", strings.Repeat("h", 32), "--cluster-secret", good}, ""},
		{"auth without a secret", nil, []string{"--auth-hmac-secret", strings.Repeat("h", 32)}, "--cluster-secret is not set"},
		{"env set but empty", map[string]string{"ROOST_CLUSTER_SECRET": ""}, nil, "ROOST_CLUSTER_SECRET is set but empty"},
		{"env set to spaces", map[string]string{"ROOST_CLUSTER_SECRET": "  "}, nil, "ROOST_CLUSTER_SECRET is set but empty"},
		{"flag given empty", nil, []string{"--cluster-secret", ""}, "--cluster-secret is given but empty"},
		{"accept env empty", map[string]string{"ROOST_CLUSTER_SECRET_ACCEPT": ""}, []string{"--cluster-secret", good}, "ROOST_CLUSTER_SECRET_ACCEPT is set but empty"},
		{"compose placeholder", map[string]string{"ROOST_CLUSTER_SECRET": "change-me-to-32-random-bytes"}, nil, "placeholder"},
		{"kubernetes placeholder", map[string]string{"ROOST_CLUSTER_SECRET": "replace-me-with-32-random-bytes"}, nil, "placeholder"},
		{"short", nil, []string{"--cluster-secret", "x"}, "1 bytes: use at least 16"},
		{"15 bytes", nil, []string{"--cluster-secret", "0123456789abcde"}, "at least 16"},
		{"short accept", nil, []string{"--cluster-secret", good, "--cluster-secret-accept", "old"}, "--cluster-secret-accept is 3 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"ROOST_CLUSTER_SECRET", "ROOST_CLUSTER_SECRET_ACCEPT", "ROOST_CLUSTER_SECRET_FILE", "ROOST_AUTH_HMAC_SECRET"} {
				if v, ok := os.LookupEnv(k); ok {
					t.Setenv(k, v) // restored after the test
					os.Unsetenv(k)
				}
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			err := setUpMember(t, tc.args...)
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "head -c 32 /dev/urandom") {
				t.Errorf("the error does not say how to make a secret: %v", err)
			}
		})
	}
}

func TestSecretFileWithAPlaceholderIsRefused(t *testing.T) {
	f := t.TempDir() + "/secret"
	if err := os.WriteFile(f, []byte("replace-me-with-32-random-bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setUpMember(t, "--cluster-secret-file", f); err == nil || !strings.Contains(err.Error(), "placeholder") {
		t.Fatalf("got %v, want the placeholder refused", err)
	}
}
