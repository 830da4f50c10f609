package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
	"github.com/roost-dev/roost/protocol"
)

// TestPausedNodeServesNothingStale: with one node already killed, SIGSTOP another past failure
// detection (its heir serves its rooms, which take writes), then SIGCONT it while clients
// hammer its rooms through the router and directly, and stream sources knock on its TCP port.
// For 5 s nobody may be served the woken node's stale copy: no welcome (and so no resume, no
// history, no ack) at the pre-freeze epoch and seq, and no OK carrying the pre-freeze seq.
func TestPausedNodeServesNothingStale(t *testing.T) {
	nodes, rt := startReplicatedCluster(t, 3, 1)
	killed, victim := nodes[1], nodes[2]
	alive := []*proc.Proc{nodes[0], rt}

	// Rooms on the victim, each with history in its pre-freeze epoch.
	stale := map[string]string{} // room → pre-freeze epoch
	for room := range roomsByOwner(t, rt, "pause-", 4, victim.ID) {
		c, err := client.Dial(t.Context(), rt.URL(), room, &client.Options{Discard: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := range pauseStaleSeq {
			if _, err := c.PublishID(t.Context(), fmt.Sprint("before-", i), i); err != nil {
				t.Fatal(err)
			}
		}
		stale[room] = c.Welcome().Epoch
		c.Close()
	}

	killed.Signal(syscall.SIGKILL)
	<-killed.Exited()
	proc.WaitRingT(t, append(alive, victim), 2)
	// The victim's rooms whose replica was on the killed node are seeded on the survivor before
	// the pause: a pause before that would be a second failure with the room on one node.
	wait.Eventually(t, 15*time.Second, "the victim's rooms replicated again", func() bool {
		v, err := unlabelled(victim, "roost_rooms_under_replicated")
		return err == nil && v == 0
	})

	victim.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			victim.Signal(syscall.SIGCONT)
		}
	}()
	wait.Eventually(t, 15*time.Second, "the other members declare the stopped node dead", func() bool {
		for _, p := range alive {
			if p.State(victim.ID) != "dead" {
				return false
			}
		}
		return true
	})
	// Its rooms are served elsewhere meanwhile (by the heir that holds their replica, in their
	// epoch with all 20 messages) and take a write there: a copy at seq 20 in that epoch is the
	// stale one from then on.
	for room, epoch := range stale {
		c, err := client.Dial(t.Context(), rt.URL(), room, &client.Options{Discard: true})
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Welcome(); w.Node == victim.ID || w.Epoch != epoch || w.Seq != pauseStaleSeq {
			t.Fatalf("room %s served by %s in epoch %s at seq %d while its owner was stopped, want its heir in %s at %d",
				room, w.Node, w.Epoch, w.Seq, epoch, pauseStaleSeq)
		}
		if _, err := c.PublishID(t.Context(), "during", 1); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// Hammer the rooms from before SIGCONT (the stopped node's kernel queues the connections)
	// until 5 s after it.
	var tally pauseTally
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for room := range stale {
		resume := url.Values{"since": {fmt.Sprint(pauseStaleSeq)}, "epoch": {stale[room]}}
		for _, base := range []string{rt.URL(), victim.URL()} {
			wg.Go(func() { tally.hammerWS(ctx, base, room, resume, stale[room]) })
		}
		wg.Go(func() { tally.hammerTCP(ctx, victim.TCP, room) })
	}
	time.Sleep(300 * time.Millisecond) // let the first attempts queue at the stopped node
	victim.Signal(syscall.SIGCONT)
	stopped = false
	time.Sleep(5 * time.Second)
	cancel()
	wg.Wait()

	tally.mu.Lock()
	defer tally.mu.Unlock()
	t.Logf("after SIGCONT: %d welcomes (%d from the woken node), %d stream OKs from it; stale: %d welcomes, %d OKs",
		tally.welcomes, tally.fromVictim(victim.ID), tally.oks, tally.staleCount, tally.staleOKs)
	if tally.staleCount > 0 || tally.staleOKs > 0 {
		t.Fatalf("the woken node served its stale copies: %d welcomes in the pre-freeze epoch (first: %v), %d stream OKs at the pre-freeze seq",
			tally.staleCount, tally.staleWelcomes, tally.staleOKs)
	}
	if tally.welcomes == 0 {
		t.Fatal("no client was served at all in the 5 s after SIGCONT")
	}
	proc.WaitRingT(t, []*proc.Proc{nodes[0], victim, rt}, 2)
	if d, ok := pauseDecision(victim); ok {
		t.Logf("the woken node decided in %v (roost_pause_decision_seconds)", d.Round(time.Millisecond))
	} else {
		t.Error("the woken node recorded no pause decision (roost_pause_decision_seconds)")
	}
}

// pauseStaleSeq is each room's seq before the pause; the copy its heir serves meanwhile is past
// it.
const pauseStaleSeq = 20

// pauseTally counts what clients were served after the pause.
type pauseTally struct {
	mu            sync.Mutex
	welcomes      int
	byNode        map[string]int
	staleWelcomes []string // the first few, for the failure message
	staleCount    int
	oks, staleOKs int
}

func (p *pauseTally) fromVictim(id string) int { return p.byNode[id] }

// hammerWS connects to room at base again and again until ctx ends, recording every welcome.
func (p *pauseTally) hammerWS(ctx context.Context, base, room string, resume url.Values, staleEpoch string) {
	d := websocket.Dialer{HandshakeTimeout: 8 * time.Second}
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/rooms/" + room + "/ws?" + resume.Encode()
	for ctx.Err() == nil {
		ws, _, err := d.DialContext(ctx, u, nil)
		if err != nil {
			select { // a 307 or 503 while the ring settles: try again
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		_ = ws.SetReadDeadline(time.Now().Add(8 * time.Second))
		var w protocol.Welcome
		if err := ws.ReadJSON(&w); err == nil && w.Type == protocol.TypeWelcome {
			p.mu.Lock()
			p.welcomes++
			if p.byNode == nil {
				p.byNode = map[string]int{}
			}
			p.byNode[w.Node]++
			if w.Epoch == staleEpoch && w.Seq <= pauseStaleSeq { // without the write taken meanwhile
				p.staleCount++
				if len(p.staleWelcomes) < 10 {
					p.staleWelcomes = append(p.staleWelcomes, room+"@"+w.Node)
				}
			}
			p.mu.Unlock()
		}
		ws.Close()
	}
}

// hammerTCP knocks on a node's stream port for room until ctx ends: an OK with the room's
// pre-freeze seq would be the stale copy answering.
func (p *pauseTally) hammerTCP(ctx context.Context, addr, room string) {
	hs, _ := json.Marshal(map[string]string{"room": room})
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(8 * time.Second))
		_, _ = c.Write(append(hs, '\n'))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		var seq uint64
		if _, err := fmt.Sscanf(line, "OK %d", &seq); err == nil {
			p.mu.Lock()
			p.oks++
			if seq == pauseStaleSeq { // the write taken meanwhile elsewhere is missing
				p.staleOKs++
			}
			p.mu.Unlock()
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pauseDecision reads the mean of roost_pause_decision_seconds from p's metrics.
func pauseDecision(p *proc.Proc) (time.Duration, bool) {
	resp, err := http.Get(p.URL() + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var sum, count float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "roost_pause_decision_seconds_sum "); ok {
			fmt.Sscan(v, &sum)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "roost_pause_decision_seconds_count "); ok {
			fmt.Sscan(v, &count)
		}
	}
	if count == 0 {
		return 0, false
	}
	return time.Duration(sum / count * float64(time.Second)), true
}
