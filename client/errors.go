package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/roost-dev/roost/protocol"
)

// ErrClosed is returned by Next, Publish and the other methods of a Conn once Close was called.
var ErrClosed = errors.New("roost: connection closed by the client")

// HTTPError is an HTTP answer other than the one asked for: the server refused a resolve, or
// refused a WebSocket before upgrading it. Code and Message come from the server's JSON body
// {"error","code"} (protocol.Error); for a body that is not roost's JSON, Code is empty and
// Message is the start of the body or the status text.
type HTTPError struct {
	Status  int    // HTTP status code, e.g. 400
	Code    string // roost's error code, e.g. protocol.CodeBadRoom
	Message string // the server's human sentence
	URL     string // the URL that answered
	// RetryAfter is the wait the server asked for (its Retry-After header), if it asked.
	RetryAfter time.Duration
}

// Error says who answered what, e.g. "roost: http://h/v1/rooms/a%20b answered 400 bad_room: …".
func (e *HTTPError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	return fmt.Sprintf("roost: %s answered %d %s: %s", e.URL, e.Status, code, e.Message)
}

// Retryable reports whether trying again later may succeed: the cluster was not ready, had no
// node, was at a limit or failed on its side. Bad input and auth refusals are not retryable.
func (e *HTTPError) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

// overloaded reports whether err is a member refusing a handshake only for now (503 with a
// Retry-After: too many in progress), and the wait it asked for.
func overloaded(err error) (time.Duration, bool) {
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusServiceUnavailable && he.RetryAfter > 0 {
		return he.RetryAfter, true
	}
	return 0, false
}

// httpError builds an HTTPError from an answer whose body holds (the start of) protocol.Error.
func httpError(url string, resp *http.Response) *HTTPError {
	e := &HTTPError{Status: resp.StatusCode, URL: url}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(min(s, 3600)) * time.Second
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
	}
	var pe protocol.Error
	if json.Unmarshal(body, &pe) == nil && (pe.Code != "" || pe.Error != "") {
		e.Code, e.Message = pe.Code, pe.Error
		return e
	}
	e.Message = strings.TrimSpace(string(body))
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// CodeBadFrame is the Code of the ServerError in an EventError the Conn makes itself for a frame
// from the server it cannot read (not JSON, or a binary frame shorter than its seq). The frame is
// skipped and the connection kept.
const CodeBadFrame = "bad_frame"

// ServerError is an error frame the server sent: a publish it refused (ID names the publish), or
// a frame it could not read.
type ServerError struct {
	Code    string // e.g. protocol.CodeBadRequest, protocol.CodeForbidden
	Message string // the server's human sentence
	ID      string // the publish id the error is about, if any
}

// Error says what the server refused and why.
func (e *ServerError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("roost: server refused publish %q: %s: %s", e.ID, e.Code, e.Message)
	}
	return fmt.Sprintf("roost: server error %s: %s", e.Code, e.Message)
}

// CloseError is a close the Conn does not recover from: the server closed the connection with a
// code that reconnecting would not fix (4401 unauthorized, 4403 forbidden, 4008 slow consumer,
// 1009 too big, ...), or any close when reconnecting is off.
type CloseError struct {
	Code   int    // the WebSocket close code, e.g. protocol.CloseForbidden
	Reason string // the close reason the server gave
}

// closeMeanings says what roost's close codes mean, for errors.
var closeMeanings = map[int]string{
	protocol.CloseMoved:        " (room moved)",
	protocol.CloseSlowConsumer: " (slow consumer: read events faster, e.g. call Next from a dedicated goroutine)",
	protocol.CloseUnauthorized: " (unauthorized: check the token)",
	protocol.CloseForbidden:    " (forbidden: the token does not grant this room)",
	protocol.CloseTooBig:       " (frame too big)",
	protocol.CloseGoingAway:    " (going away)",
}

// Error gives the close code, what it means in roost and the server's reason.
func (e *CloseError) Error() string {
	return fmt.Sprintf("roost: connection closed with %d%s: %s", e.Code, closeMeanings[e.Code], e.Reason)
}

// Moved decodes the reason of a 4001 close: the room's new owner and where the closed connection
// stopped. It reports false for any other close.
func (e *CloseError) Moved() (protocol.MovedReason, bool) {
	var m protocol.MovedReason
	if e.Code != protocol.CloseMoved {
		return m, false
	}
	_ = json.Unmarshal([]byte(e.Reason), &m)
	return m, true
}
