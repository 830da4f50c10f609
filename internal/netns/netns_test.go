package netns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echo serves, on l, one line per connection: who answered, then the caller's first line back.
func echo(t *testing.T, l net.Listener, who string) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "%s %s", who, line)
			}()
		}
	}()
}

// ask connects to addr from h (or from the test's own namespace when h is nil) and returns who
// answered, or "" when no connection was made in time.
func ask(t *testing.T, h *Host, addr string) string {
	t.Helper()
	var c net.Conn
	var err error
	if h == nil {
		c, err = net.DialTimeout("tcp", addr, time.Second)
	} else {
		c, err = h.Dial("tcp", addr, time.Second)
	}
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "hi\n")
	b, _ := io.ReadAll(c)
	who, _, _ := strings.Cut(string(b), " ")
	return who
}

// TestFilters: each injection cuts what it says and nothing else, and its undo restores it.
func TestFilters(t *testing.T) {
	nt := New(t, 3)
	a, b, c := nt.Hosts()[0], nt.Hosts()[1], nt.Hosts()[2]
	for _, h := range nt.Hosts() {
		for _, port := range []string{"5000", "5001"} {
			l, err := h.Listen("tcp", h.Addr+":"+port)
			if err != nil {
				t.Fatal(err)
			}
			echo(t, l, h.Name)
		}
	}
	reach := func(from *Host, to *Host, port string) bool { return ask(t, from, to.Addr+":"+port) == to.Name }
	if !reach(a, b, "5000") || !reach(nil, b, "5000") || !reach(c, a, "5001") {
		t.Fatal("the hosts do not reach each other to begin with")
	}

	undo := nt.BlockTCP(5000, a, b)
	if reach(a, b, "5000") || reach(b, a, "5000") {
		t.Fatal("port 5000 still flows between a and b")
	}
	if !reach(a, b, "5001") || !reach(c, b, "5000") || !reach(nil, a, "5000") || !reach(b, c, "5000") {
		t.Fatal("the block took more than port 5000 between a and b")
	}
	undo()
	if !reach(a, b, "5000") || !reach(b, a, "5000") {
		t.Fatal("the block outlived its undo")
	}

	// One way only: with b's inbound cut, b cannot be reached, yet what b sends still arrives
	// (a UDP datagram, which needs no answer).
	heal := b.CutOneWay(ToHost)
	if reach(a, b, "5000") || reach(nil, b, "5000") {
		t.Fatal("b is reached with its inbound cut")
	}
	u, err := a.in2udp(t)
	if err != nil {
		t.Fatal(err)
	}
	if !sendUDP(t, b, u) {
		t.Fatal("with b's inbound cut, what b sends is lost too")
	}
	heal()
	heal = b.CutOneWay(FromHost)
	if reach(a, b, "5000") {
		t.Fatal("b answers with its outbound cut")
	}
	if sendUDP(t, b, u) {
		t.Fatal("with b's outbound cut, what b sends arrives")
	}
	heal()
	if !reach(a, b, "5000") || !sendUDP(t, b, u) {
		t.Fatal("the one-way cuts outlived their heal")
	}

	// Impaired: every datagram late by about the delay, some lost; then on time again.
	undoNetem := nt.Netem(Impairment{Loss: 0.2, Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond})
	lost, slow := 0, 0
	for range 40 {
		start := time.Now()
		if !sendUDP(t, b, u) {
			lost++
		} else if time.Since(start) > 70*time.Millisecond {
			slow++
		}
	}
	if lost < 2 || lost > 20 || slow != 40-lost {
		t.Fatalf("impaired: %d of 40 lost, %d of the rest late by 70 ms or more", lost, slow)
	}
	// TCP too (a lost SYN costs the dial its second, so a few tries).
	for _, to := range []*Host{b, c} {
		ok := false
		for range 5 {
			if ok = reach(a, to, "5000"); ok {
				break
			}
		}
		if !ok {
			t.Fatalf("TCP from %s to %s does not get through the impairment", a.Name, to.Name)
		}
	}
	undoNetem()
	start := time.Now()
	if !sendUDP(t, b, u) || time.Since(start) > 50*time.Millisecond {
		t.Fatal("the impairment outlived its undo")
	}

	// A diverted port reaches the listener on via; every other port, and the same port from
	// hosts not diverted, still reach the alias's own host.
	alias := b.Alias()
	undo = nt.Divert(alias, 5002, c, a)
	l, err := c.Listen("tcp", alias+":5002")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l, "proxy")
	l, err = b.Listen("tcp", alias+":5002")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l, b.Name)
	if got := ask(t, a, alias+":5002"); got != "proxy" {
		t.Fatalf("diverted: answered by %q", got)
	}
	if got := ask(t, nil, alias+":5002"); got != b.Name {
		t.Fatalf("not diverted: answered by %q", got)
	}
	undo()
	if got := ask(t, a, alias+":5002"); got != b.Name {
		t.Fatalf("after the undo: answered by %q", got)
	}
}

// in2udp opens a UDP socket in h and returns it.
func (h *Host) in2udp(t *testing.T) (*net.UDPConn, error) {
	var u *net.UDPConn
	err := h.in(func() error {
		pc, err := net.ListenPacket("udp", h.Addr+":5003")
		if err == nil {
			u = pc.(*net.UDPConn)
			t.Cleanup(func() { u.Close() })
		}
		return err
	})
	return u, err
}

// sendUDP sends a datagram from h to u and reports whether it arrived within a second.
func sendUDP(t *testing.T, h *Host, u *net.UDPConn) bool {
	t.Helper()
	c, err := h.Dial("udp", u.LocalAddr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := fmt.Sprint(time.Now().UnixNano())
	c.Write([]byte(want))
	buf := make([]byte, 64)
	u.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, _, err := u.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == want {
			return true
		}
	}
}
