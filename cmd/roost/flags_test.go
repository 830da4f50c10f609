package main

import (
	"flag"
	"io"
	"os"
	"slices"
	"testing"
	"time"
)

func TestEnvFillsUnsetFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	m := memberFlags(fs, ":9000")
	cfg := nodeFlags(fs)
	t.Setenv("ROOST_MAX_ROOMS", "7")
	t.Setenv("ROOST_ID", "from-env")
	t.Setenv("ROOST_PROBE_INTERVAL", "400ms")
	if err := parse(fs, []string{"--id", "from-flag", "--join", "a:1, b:2"}); err != nil {
		t.Fatal(err)
	}
	if m.id != "from-flag" {
		t.Errorf("--id %q: the command line must win over ROOST_ID", m.id)
	}
	if cfg.MaxRooms != 7 || m.ring.ProbeInterval != 400*time.Millisecond {
		t.Errorf("env not applied: max rooms %d, probe interval %s", cfg.MaxRooms, m.ring.ProbeInterval)
	}
	if got := splitList(m.join); !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Errorf("join list %q", got)
	}
}

func TestBadEnvIsAnError(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	nodeFlags(fs)
	t.Setenv("ROOST_SEND_QUEUE", "lots")
	if err := parse(fs, nil); err == nil {
		t.Fatal("ROOST_SEND_QUEUE=lots was accepted")
	}
}

func TestParseMixed(t *testing.T) {
	fs, c := newCtlFlags("tail")
	since := fs.Int64("since", -1, "")
	pos, err := parseMixed(fs, []string{"lobby", "--since", "3", "--addr", "http://x:1"})
	if err != nil || !slices.Equal(pos, []string{"lobby"}) || *since != 3 || c.addr != "http://x:1" {
		t.Fatalf("pos %v since %d addr %s err %v", pos, *since, c.addr, err)
	}
}

// TestStaleAfterBelowDetection: a node paused for --stale-after's default must notice before the
// others can have declared it dead with the ring's default timers (a probe interval for the
// probe that finds it silent, then a suspicion of SuspicionMult intervals once confirmed).
func TestStaleAfterBelowDetection(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	m := memberFlags(fs, ":9000")
	cfg := nodeFlags(fs)
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	soonest := m.ring.ProbeInterval * time.Duration(1+m.ring.SuspicionMult)
	if cfg.StaleAfter >= soonest {
		t.Fatalf("--stale-after %s is not below the soonest dead verdict, %s", cfg.StaleAfter, soonest)
	}
}

// The webhook flags: the secret as is or in a file (not both), the event types checked, and the
// URL and types held by the node's config check.
func TestWebhookFlags(t *testing.T) {
	file := t.TempDir() + "/secret"
	if err := os.WriteFile(file, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg := nodeFlags(fs)
	if err := parse(fs, []string{"--webhook-url", "http://127.0.0.1:1/hook", "--webhook-secret-file", file, "--webhook-events", "message,member.join"}); err != nil {
		t.Fatal(err)
	}
	if string(cfg.WebhookSecret) != "from-a-file" || len(cfg.WebhookEvents) != 2 || !cfg.WebhookEvents["message"] || cfg.Validate() != nil {
		t.Fatalf("secret %q, events %v, valid: %v", cfg.WebhookSecret, cfg.WebhookEvents, cfg.Validate())
	}
	for name, args := range map[string][]string{
		"both secrets":   {"--webhook-secret", "a", "--webhook-secret-file", file},
		"unknown type":   {"--webhook-events", "room.full"},
		"no type":        {"--webhook-events", ","},
		"empty secret":   {"--webhook-secret", ""},
		"missing file":   {"--webhook-secret-file", file + ".not"},
		"a bad duration": {"--webhook-backoff-min", "soon"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		nodeFlags(fs)
		if err := parse(fs, args); err == nil {
			t.Errorf("%s (%v): accepted", name, args)
		}
	}
	for name, args := range map[string][]string{
		"not a URL":             {"--webhook-url", "127.0.0.1:9999"},
		"backoff min above max": {"--webhook-url", "http://h/", "--webhook-backoff-min", "1m", "--webhook-backoff-max", "1s"},
		"no batch":              {"--webhook-batch", "0"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cfg := nodeFlags(fs)
		if err := parse(fs, args); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg.Validate() == nil {
			t.Errorf("%s (%v): the config check passed", name, args)
		}
	}
}
