package ring

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/roost-dev/roost/internal/wait"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: probeNode returns on its own
	// once its ack timeout (at most the probe interval times the awareness multiplier) passes.
	// Members that cannot decrypt each other (TestSecretRotation) leave such probes behind.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

func startMember(t *testing.T, id string, role Role, join ...string) *Ring {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.Role = id, role
	cfg.Gossip = "127.0.0.1:0"
	cfg.HTTP = "127.0.0.1:1"
	cfg.TCP = "127.0.0.1:2"
	cfg.Join = join
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestMembersAgree(t *testing.T) {
	n1 := startMember(t, "n1", RoleNode)
	ch, stop := n1.Subscribe()
	defer stop()
	n2 := startMember(t, "n2", RoleNode, n1.GossipAddr())
	n3 := startMember(t, "n3", RoleNode, n2.GossipAddr())
	rt := startMember(t, "r1", RoleRouter, n1.GossipAddr())
	all := []*Ring{n1, n2, n3, rt}
	wait.Eventually(t, 10*time.Second, "all members see 3 nodes and agree on the version", func() bool {
		v := n1.Placement().Version()
		for _, r := range all {
			if len(r.Placement().Nodes()) != 3 || r.Placement().Version() != v || len(r.Placement().Members()) != 4 {
				return false
			}
		}
		return true
	})
	for i := range 500 {
		room := fmt.Sprintf("room-%d", i)
		want, _ := n1.Placement().Owner(room)
		for _, r := range all {
			if got, _ := r.Placement().Owner(room); got.ID != want.ID || got.HTTP != want.HTTP {
				t.Fatalf("%s: %s says %+v, n1 says %+v", room, r.ID(), got, want)
			}
		}
	}
	if !rt.Ready() {
		t.Fatal("router not ready with 3 nodes in the ring")
	}
	select {
	case p := <-ch:
		if p == nil || p.Version() == "" {
			t.Fatal("empty placement from Subscribe")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber heard of no change")
	}

	// Draining takes a node out of placement everywhere, graceful leave lists it as left.
	if err := n3.UpdateMeta(t.Context(), func(m *Meta) { m.Draining = true }); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 5*time.Second, "the draining node leaves every placement", func() bool {
		for _, r := range all {
			if len(r.Placement().Nodes()) != 2 {
				return false
			}
		}
		m, _ := n1.Placement().Member("n3")
		return m.State == StateDraining
	})
	if err := n3.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 5*time.Second, "n3 listed as left", func() bool {
		m, ok := n1.Placement().Member("n3")
		return ok && m.State == StateLeft
	})
}

func TestKilledMemberDeclaredDead(t *testing.T) {
	n1 := startMember(t, "n1", RoleNode)
	n2 := startMember(t, "n2", RoleNode, n1.GossipAddr())
	n3 := startMember(t, "n3", RoleNode, n1.GossipAddr())
	wait.Eventually(t, 10*time.Second, "3 nodes", func() bool { return len(n1.Placement().Nodes()) == 3 && len(n2.Placement().Nodes()) == 3 })
	// Shutdown without Leave looks like a crash to the others.
	if _, ok := n1.GoneSince("n3"); ok {
		t.Fatal("GoneSince reports a member that never left")
	}
	start := time.Now()
	n3.shutdown(false)
	wait.Eventually(t, 10*time.Second, "n3 declared dead by both", func() bool {
		m1, _ := n1.Placement().Member("n3")
		m2, _ := n2.Placement().Member("n3")
		return m1.State == StateDead && m2.State == StateDead && len(n1.Placement().Nodes()) == 2
	})
	t.Logf("a killed member left the placement after %s", time.Since(start).Round(10*time.Millisecond))
	if ago, ok := n2.GoneSince("n3"); !ok || ago > time.Since(start) {
		t.Fatalf("GoneSince(n3) = %v, %v; want the time since it was declared dead", ago, ok)
	}
}

func TestJoinRetriesUntilSeedAnswers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.Gossip, cfg.HTTP = "late", "127.0.0.1:0", "127.0.0.1:1"
	cfg.Join = []string{"127.0.0.1:1"} // nobody there
	cfg.JoinRetry = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	time.Sleep(200 * time.Millisecond)
	if r.Ready() {
		t.Fatal("ready without having joined")
	}
}

// A seed given as a DNS name ("localhost" resolves to 127.0.0.1 and often ::1 too) is joined
// through whichever of its addresses answers.
func TestJoinByDNSName(t *testing.T) {
	n1 := startMember(t, "n1", RoleNode)
	_, port, _ := splitPort(n1.GossipAddr())
	n2 := startMember(t, "n2", RoleNode, fmt.Sprintf("localhost:%d", port))
	wait.Eventually(t, 10*time.Second, "joined through localhost", func() bool {
		return len(n2.Placement().Nodes()) == 2 && len(n1.Placement().Nodes()) == 2
	})
}

// TestSecretRotation: the three steps of a rotation from key A to key B each keep the members of
// the previous step and of the next one in one cluster, and a member on another key stays out.
func TestSecretRotation(t *testing.T) {
	a, b := KeyFromSecret("old secret"), KeyFromSecret("new secret")
	member := func(id string, key []byte, accept [][]byte, join ...string) *Ring {
		cfg := DefaultConfig()
		cfg.ID, cfg.Role, cfg.Gossip, cfg.HTTP, cfg.TCP, cfg.Join = id, RoleNode, "127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2", join
		cfg.SecretKey, cfg.AcceptKeys = key, accept
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	sees := func(rs ...*Ring) func() bool {
		return func() bool {
			for _, r := range rs {
				if len(r.Placement().Nodes()) != len(rs) {
					return false
				}
			}
			return true
		}
	}
	// Before (A) and step 1 (A, accepting B).
	m1 := member("m1", a, nil)
	m2 := member("m2", a, [][]byte{b}, m1.GossipAddr())
	wait.Eventually(t, 10*time.Second, "A and A+accept B in one cluster", sees(m1, m2))
	// A rolling restart finishes a step before the next begins: m1 restarts into step 1 (here:
	// leaves), then step 2 (B, accepting A) joins members on step 1.
	_ = m1.Leave(time.Second)
	wait.Eventually(t, 10*time.Second, "m1 gone", sees(m2))
	m3 := member("m3", b, [][]byte{a}, m2.GossipAddr())
	wait.Eventually(t, 10*time.Second, "step 1 and step 2 in one cluster", sees(m2, m3))
	// Step 3 (B only) joins members on step 2.
	_ = m2.Leave(time.Second)
	wait.Eventually(t, 10*time.Second, "m2 gone", sees(m3))
	m4 := member("m4", b, nil, m3.GossipAddr())
	wait.Eventually(t, 10*time.Second, "step 2 and step 3 in one cluster", sees(m3, m4))
	// A member on neither key never gets in.
	stranger := member("x", KeyFromSecret("another cluster"), nil, m3.GossipAddr())
	time.Sleep(time.Second)
	if n := len(stranger.Placement().Nodes()); n != 1 {
		t.Fatalf("a member with another secret sees %d nodes", n)
	}
	for _, m := range []*Ring{m3, m4} {
		if _, ok := m.Placement().Member("x"); ok {
			t.Fatalf("%s lists the stranger", m.ID())
		}
	}
}
