package client

import (
	"encoding/json"

	"github.com/roost-dev/roost/protocol"
)

// EventType says what an Event is. The values are the wire frame types, plus "binary" and
// "reconnected".
type EventType string

// Event types.
const (
	// EventMessage is a room message with a JSON value: Seq, Client, ID, Data.
	EventMessage EventType = protocol.TypeMessage
	// EventBinary is a binary room message (from a stream source or a binary publish): Seq,
	// Payload.
	EventBinary EventType = "binary"
	// EventPresence is a presence frame: Presence (protocol.PresenceState, PresenceJoin,
	// PresenceLeave or PresenceInterval), Client (join, leave), Clients (state), Joined and
	// Left (interval), Count (always).
	EventPresence EventType = protocol.TypePresence
	// EventGap says messages From..To (inclusive) will never arrive: the room no longer
	// retained them when this client resumed.
	EventGap EventType = protocol.TypeGap
	// EventReset says the room's numbering restarted: its state was lost (e.g. its owner
	// crashed, or it moved with no hand-off), so what this client missed is unknown. Epoch is
	// the new epoch and Seq the room's latest seq in it; messages from the start of what the
	// room retains of the new epoch follow.
	EventReset EventType = protocol.TypeReset
	// EventError is an error frame the server sent that no Publish call was waiting for. Err is
	// a *ServerError.
	EventError EventType = protocol.TypeError
	// EventReconnected says the Conn lost its connection and made a new one: Welcome is the new
	// welcome (its Node may differ) and Err why the old connection ended. What was missed
	// follows as messages, or as a gap or a reset event.
	EventReconnected EventType = "reconnected"
)

// Event is one thing that happened in the room. Which fields are set depends on Type; see the
// EventType constants.
type Event struct {
	Type EventType

	Seq     uint64          // message, binary: the message's seq; reset: the room's latest seq
	Client  string          // message: the publisher's client id; presence join/leave: the member
	ID      string          // message: the publish id, which tells a publisher its own messages
	Data    json.RawMessage // message: the published JSON value
	Payload []byte          // binary: the payload

	Presence string   // presence: the presence event, e.g. protocol.PresenceJoin
	Clients  []string // presence state: the members (capped by the server)
	Joined   []string // presence interval: who joined since the last summary
	Left     []string // presence interval: who left since the last summary
	Count    int      // presence: the exact member count

	From, To uint64 // gap: the first and last seq that will never arrive
	Epoch    string // reset: the room's new epoch

	Welcome *protocol.Welcome // reconnected: the new connection's welcome
	Err     error             // error: a *ServerError; reconnected: why the old connection ended
}

// event turns a text frame into an Event; ok is false for frames that are not events.
func event(f *protocol.Incoming) (Event, bool) {
	switch f.Type {
	case protocol.TypeMessage:
		return Event{Type: EventMessage, Seq: f.Seq, Client: f.Client, ID: f.ID, Data: f.Data}, true
	case protocol.TypePresence:
		return Event{Type: EventPresence, Presence: f.Event, Client: f.Client, Clients: f.Clients,
			Joined: f.Joined, Left: f.Left, Count: f.Count}, true
	case protocol.TypeGap:
		return Event{Type: EventGap, From: f.From, To: f.To}, true
	case protocol.TypeReset:
		return Event{Type: EventReset, Epoch: f.Epoch, Seq: f.Seq}, true
	case protocol.TypeError:
		return Event{Type: EventError, ID: f.ID, Err: &ServerError{Code: f.Code, Message: f.Error, ID: f.ID}}, true
	}
	return Event{}, false
}

// position is where a stream of events stands: the epoch and the last message seq in it. The
// reader keeps one to drop duplicates and to resume; Next keeps another for LastSeq and Epoch.
type position struct {
	epoch string
	seq   uint64
}

// advance moves p past ev. It reports false for a message p has already passed (a duplicate).
func (p *position) advance(ev *Event) bool {
	switch ev.Type {
	case EventMessage, EventBinary:
		if ev.Seq <= p.seq {
			return false
		}
		p.seq = ev.Seq
	case EventGap:
		p.seq = max(p.seq, ev.To)
	case EventReset:
		// The server continues with what it retains of the new epoch, from its start.
		p.epoch, p.seq = ev.Epoch, 0
	}
	return true
}
