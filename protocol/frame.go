package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Frame types, server to client.
const (
	TypeWelcome  = "welcome"
	TypeMessage  = "message"
	TypeAck      = "ack"
	TypePresence = "presence"
	TypeGap      = "gap"
	TypeReset    = "reset"
	TypeError    = "error"
)

// Frame types, client to server.
const TypePublish = "publish"

// Presence events.
const (
	PresenceState    = "state"
	PresenceJoin     = "join"
	PresenceLeave    = "leave"
	PresenceInterval = "interval"
)

// Close codes.
const (
	CloseMoved        = 4001 // room moved; reason is a MovedReason
	CloseSlowConsumer = 4008 // the connection fell too far behind
	CloseUnauthorized = 4401
	CloseForbidden    = 4403
	CloseTooBig       = 1009
	CloseGoingAway    = 1001
)

// Welcome is the first frame on every connection.
type Welcome struct {
	Type   string `json:"type"`
	Room   string `json:"room"`
	Node   string `json:"node"`
	Client string `json:"client"`
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`   // the room's latest seq
	Count  int    `json:"count"` // clients in the room
}

// Message is a room message as a text frame. Binary messages travel as binary frames instead
// (see BinaryFrame).
type Message struct {
	Type   string          `json:"type"`
	Seq    uint64          `json:"seq"`
	Client string          `json:"client"`
	ID     string          `json:"id,omitempty"`
	Data   json.RawMessage `json:"data"`
}

// Ack tells a publisher its message was sequenced.
type Ack struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Seq  uint64 `json:"seq"`
}

// Presence is a presence frame; which fields are set depends on Event.
type Presence struct {
	Type    string   `json:"type"`
	Event   string   `json:"event"`
	Client  string   `json:"client,omitempty"`  // join, leave
	Clients []string `json:"clients,omitempty"` // state
	Joined  []string `json:"joined,omitempty"`  // interval
	Left    []string `json:"left,omitempty"`    // interval
	Count   int      `json:"count"`
}

// Gap says messages From..To (inclusive) will never arrive: they are no longer retained.
type Gap struct {
	Type string `json:"type"`
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Reset says the epoch a resume named is gone: numbering restarted at Epoch, now at Seq.
type Reset struct {
	Type  string `json:"type"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// ErrorFrame rejects one request; the connection stays open unless a close follows.
type ErrorFrame struct {
	Type  string `json:"type"`
	Code  string `json:"code"`
	Error string `json:"error"`
	ID    string `json:"id,omitempty"`
}

// MovedReason is the JSON reason of a 4001 close.
type MovedReason struct {
	Node  string `json:"node"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"` // the last seq sent on the closed connection
}

// Publish is the client's publish frame.
type Publish struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data"`
}

// Incoming is any frame a server may send, decoded loosely: the client decodes into it and looks
// at Type.
type Incoming struct {
	Type    string          `json:"type"`
	Room    string          `json:"room,omitempty"`
	Node    string          `json:"node,omitempty"`
	Client  string          `json:"client,omitempty"`
	Epoch   string          `json:"epoch,omitempty"`
	Seq     uint64          `json:"seq,omitempty"`
	Count   int             `json:"count,omitempty"`
	ID      string          `json:"id,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Event   string          `json:"event,omitempty"`
	Clients []string        `json:"clients,omitempty"`
	Joined  []string        `json:"joined,omitempty"`
	Left    []string        `json:"left,omitempty"`
	From    uint64          `json:"from,omitempty"`
	To      uint64          `json:"to,omitempty"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// AppendMessage appends the text frame of a message to b. It writes the JSON by hand because it
// runs once per message on the hot path; strings are escaped with encoding/json's rules. data must
// be valid JSON.
func AppendMessage(b []byte, seq uint64, client, id string, data []byte) []byte {
	b = append(b, `{"type":"message","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"client":`...)
	b = appendString(b, client)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, id)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendString appends s as a JSON string. Plain ASCII is copied; anything else goes through
// encoding/json so escaping is exactly its own.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ErrShortBinary is returned by ParseBinary for frames under 8 bytes.
var ErrShortBinary = errors.New("binary frame shorter than its 8-byte seq")

// ParseBinary splits a binary frame into its seq and payload.
func ParseBinary(b []byte) (uint64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, ErrShortBinary
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}

// CloseReason cuts s to the 123 bytes a close frame's reason holds, on a rune boundary.
func CloseReason(s string) string {
	if len(s) <= 123 {
		return s
	}
	s = s[:123]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// MaxIDLen is the longest publish id a server takes, in bytes.
const MaxIDLen = 256

// ParsePublish reads a client text frame. It returns the publish, or the error frame to answer
// with (codes bad_json, bad_request, unknown_type): a frame that is not a JSON object, a type
// other than "publish", an id over MaxIDLen, or a publish with no data.
func ParsePublish(frame []byte) (Publish, *ErrorFrame) {
	var p Publish
	if !utf8.Valid(frame) {
		// RFC 6455 text frames are UTF-8; a browser would drop the connection on relaying this.
		return p, &ErrorFrame{Type: TypeError, Code: CodeBadJSON, Error: "frame is not valid UTF-8"}
	}
	if err := json.Unmarshal(frame, &p); err != nil {
		return p, &ErrorFrame{Type: TypeError, Code: CodeBadJSON, Error: "frame is not a JSON object: " + err.Error()}
	}
	switch {
	case p.Type != TypePublish:
		return p, &ErrorFrame{Type: TypeError, Code: CodeUnknownType, ID: cut(p.ID, MaxIDLen),
			Error: "unknown frame type " + strconv.Quote(cut(p.Type, 64)) + `; clients send "publish"`}
	case len(p.ID) > MaxIDLen:
		return p, &ErrorFrame{Type: TypeError, Code: CodeBadRequest, Error: "publish id is longer than 256 bytes"}
	case len(p.Data) == 0:
		return p, &ErrorFrame{Type: TypeError, Code: CodeBadRequest, ID: p.ID, Error: `a publish needs "data" (any JSON value)`}
	}
	return p, nil
}

// cut shortens s to at most n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
