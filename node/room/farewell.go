package room

import (
	"encoding/json"
	"fmt"

	"github.com/roost-dev/roost/protocol"
	"github.com/roost-dev/roost/ring"
)

// Farewell says how a closing room parts with its clients: a plain value, turned into each
// connection's close frame and each source's last line when they are written.
type Farewell struct {
	Code  int  // close code for WebSocket clients; 0 sends none
	Flush bool // send what is queued before the close frame
	// To is where the room went, for Code 4001 (protocol.CloseMoved): the close reason names it
	// with the room's epoch and the last seq each connection was sent, and sources are told MOVED
	// to it. The zero Member means no node owns the room right now.
	To ring.Member
	// Reason and Line are the close reason and the sources' last line for any other code.
	Reason string
	Line   string
}

// Moved is the farewell of a room that now lives on to.
func Moved(to ring.Member, flush bool) Farewell {
	return Farewell{Code: protocol.CloseMoved, Flush: flush, To: to}
}

// closeReason is the close frame's reason for a connection sent up to lastSent.
func (f Farewell) closeReason(epoch string, lastSent uint64) string {
	if f.Code != protocol.CloseMoved {
		return f.Reason
	}
	b, _ := json.Marshal(protocol.MovedReason{Node: f.To.ID, Epoch: epoch, Seq: lastSent})
	return string(b)
}

// SourceLine is the last line to a stream source that had accepted frames put in the room.
func (f Farewell) SourceLine(accepted uint64) string {
	if f.Code != protocol.CloseMoved {
		return f.Line
	}
	return MovedLine(f.To, accepted)
}

// MovedLine is the MOVED answer to a stream source naming the room's owner.
func MovedLine(o ring.Member, accepted uint64) string {
	if o.ID == "" {
		return "ERR no_nodes no node owns this room right now; resolve it again shortly"
	}
	return fmt.Sprintf("MOVED %s %s %d", o.TCP, o.ID, accepted)
}
