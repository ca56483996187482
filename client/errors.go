package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinel errors returned by the client itself (never sent by a server).
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("client: closed")
	// ErrNotConnected is returned by the fire-and-forget methods (Publish,
	// Transmit) while no connection is established. Use WaitConnected to wait.
	ErrNotConnected = errors.New("client: not connected")
	// ErrUnsubscribed is returned by a Subscribe still waiting for its ack when
	// the channel is unsubscribed or kicked out in the meantime.
	ErrUnsubscribed = errors.New("client: channel unsubscribed while subscribing")
)

// Error names this package produces locally, in the style of sc-errors.
const (
	// NameBadConnection: a call was aborted because its connection closed.
	// Fields: "type" ("disconnect"), "code" (int), "reason" (string).
	NameBadConnection = "BadConnectionError"
	// NameTimeout: no response within Options.AckTimeout.
	NameTimeout = "TimeoutError"
)

// Error is an error object of the SocketCluster protocol: the "error" of a
// response, a handshake's "authError", or one of the local errors named above.
// Fields holds every other property of the wire object (e.g. "type", "code",
// "statusCode", "isBadToken"), decoded as encoding/json decodes into any
// (numbers are float64). Fields is nil when there are none.
type Error struct {
	Name    string
	Message string
	Fields  map[string]any
}

func (e *Error) Error() string {
	if e.Name == "" {
		return e.Message
	}
	return e.Name + ": " + e.Message
}

// StatusCode returns the numeric "statusCode" field (the close code a
// handshake rejection asks for), or 0.
func (e *Error) StatusCode() int { return e.intField("statusCode") }

// Code returns the numeric "code" field (e.g. the close code of a
// BadConnectionError), or 0.
func (e *Error) Code() int { return e.intField("code") }

func (e *Error) intField(k string) int {
	switch v := e.Fields[k].(type) {
	case float64:
		return int(v)
	case int:
		return v
	}
	return 0
}

// UnmarshalJSON decodes the wire form. A non-object error (the protocol passes
// e.g. a bare string through as-is) becomes an Error whose Message is its JSON
// text with quotes removed for strings.
func (e *Error) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		var s string
		if json.Unmarshal(b, &s) == nil {
			*e = Error{Message: s}
			return nil
		}
		*e = Error{Message: string(b)}
		return nil
	}
	*e = Error{}
	if v, ok := m["name"].(string); ok {
		e.Name = v
		delete(m, "name")
	}
	if v, ok := m["message"].(string); ok {
		e.Message = v
		delete(m, "message")
	} else {
		e.Message = "Invalid error message format"
	}
	if len(m) > 0 {
		e.Fields = m
	}
	return nil
}

// MarshalJSON encodes the wire form: message, name and the extra fields.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(e.Fields)+2)
	for k, v := range e.Fields {
		m[k] = v
	}
	m["message"] = e.Message
	if e.Name != "" {
		m["name"] = e.Name
	}
	return json.Marshal(m)
}

// IsBadConnection reports whether err is a call aborted by a closed connection.
func IsBadConnection(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Name == NameBadConnection
}

// IsTimeout reports whether err is an ack timeout.
func IsTimeout(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Name == NameTimeout
}

func badConnection(event string, code int, reason string) *Error {
	return &Error{
		Name:    NameBadConnection,
		Message: "Event " + event + " was aborted due to a bad connection",
		Fields:  map[string]any{"type": "disconnect", "code": code, "reason": reason},
	}
}

func timeoutError(event string) *Error {
	return &Error{Name: NameTimeout, Message: "Event response for " + event + " event timed out"}
}

// closeText is the sc-errors text for a close code, used as the reason
// reported to OnDisconnect when the peer sent none.
func closeText(code int) string {
	switch code {
	case 1000:
		return "Socket closed normally"
	case 1001:
		return "Socket was disconnected"
	case 1005:
		return "Socket closed without status code"
	case 1006:
		return "Socket hung up"
	case 1009:
		return "Message too big"
	case 1011:
		return "Server encountered an unexpected fatal condition"
	case 4000:
		return "Server ping timed out"
	case 4001:
		return "Client pong timed out"
	case 4003:
		return "Failed to complete handshake"
	case 4005:
		return "Did not receive #handshake from client before timeout"
	case 4007:
		return "Client connection establishment timed out"
	case 4008:
		return "Server rejected handshake from client"
	case 4009:
		return "Server received a message before the client handshake"
	}
	return "Socket connection closed with status code " + strconv.Itoa(code)
}

// dialError wraps a failed connection attempt with the URL it was for.
type dialError struct {
	url string
	err error
	// retryAfter is what the server asked for with a 503 or 429 and Retry-After (zero: nothing).
	retryAfter time.Duration
}

func (e *dialError) Error() string { return fmt.Sprintf("client: %s: %v", e.url, e.err) }
func (e *dialError) Unwrap() error { return e.err }
