package router

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// The scripted owners session_test.go puts behind a router: each answer they give is the test's.

// fakeOwner is a scripted room owner: it welcomes each leg with its epoch and seq and hands the
// leg to the test, which reads what the router sends and answers, closes or cuts it.
type fakeOwner struct {
	name, epoch string
	seq         uint64
	noRead      bool // never read a leg: the router's writes to it block
	srv         *httptest.Server
	legs        chan *ownerLeg
	done        chan struct{}
}

type ownerLeg struct {
	ws     *websocket.Conn
	frames chan upFrame // what the router sent, until the leg ends
	write  sync.Mutex
}

type upFrame struct {
	mt   int
	data []byte
}

func newOwner(t *testing.T, name, epoch string, seq uint64, noRead bool) *fakeOwner {
	o := &fakeOwner{name: name, epoch: epoch, seq: seq, noRead: noRead, legs: make(chan *ownerLeg, 8), done: make(chan struct{})}
	var wg sync.WaitGroup
	up := websocket.Upgrader{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		leg := &ownerLeg{ws: ws, frames: make(chan upFrame, 64)}
		_ = ws.WriteJSON(protocol.Welcome{Type: protocol.TypeWelcome, Room: "r", Node: name, Client: "c1", Epoch: epoch, Seq: seq, Count: 1})
		o.legs <- leg
		wg.Add(1)
		go func() { // owned by the owner: ends when the leg does, or at cleanup
			defer wg.Done()
			defer close(leg.frames)
			if noRead {
				<-o.done
				return
			}
			for {
				mt, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				leg.frames <- upFrame{mt, b}
			}
		}()
	}))
	t.Cleanup(func() {
		close(o.done)
		for {
			select {
			case leg := <-o.legs:
				leg.ws.Close()
				continue
			default:
			}
			break
		}
		o.srv.CloseClientConnections()
		o.srv.Close()
		wg.Wait()
	})
	return o
}

func (o *fakeOwner) member(placed bool) ring.Member {
	return ring.Member{ID: o.name, State: ring.StateAlive,
		Meta: ring.Meta{Role: ring.RoleNode, HTTP: o.srv.Listener.Addr().String(), Draining: !placed}}
}

func (o *fakeOwner) leg(t *testing.T) *ownerLeg {
	t.Helper()
	select {
	case l := <-o.legs:
		t.Cleanup(func() { l.ws.Close() })
		return l
	case <-time.After(5 * time.Second):
		t.Fatalf("no leg reached owner %s", o.name)
		return nil
	}
}

// next is the next frame the router sent on the leg.
func (l *ownerLeg) next(t *testing.T) upFrame {
	t.Helper()
	select {
	case f, ok := <-l.frames:
		if !ok {
			t.Fatal("the leg ended")
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent on the leg")
		return upFrame{}
	}
}

// quiet checks that the router sends nothing more on the leg for a moment.
func (l *ownerLeg) quiet(t *testing.T) {
	t.Helper()
	select {
	case f, ok := <-l.frames:
		if ok {
			t.Fatalf("the router sent %q, want nothing", f.data)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func (l *ownerLeg) send(t *testing.T, v any) {
	t.Helper()
	l.write.Lock()
	defer l.write.Unlock()
	if err := l.ws.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

// cut ends the leg with no close frame, as a crash or a lost machine does.
func (l *ownerLeg) cut() { _ = l.ws.NetConn().Close() }
