package scproto

import (
	"encoding/json"
	"errors"
)

// Error is a SocketCluster error object as the client sees it: name, message and any extra
// fields (statusCode, isBadToken, expiry, code, ...). Handlers and middleware return it to
// control exactly what the client receives; any other error is sent with name "Error".
type Error struct {
	Name    string
	Message string
	// Fields are extra properties copied into the wire object (e.g. "code": 123).
	Fields map[string]any
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }

// MarshalJSON produces the "dehydrated" form the client rebuilds an Error from.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(e.Fields)+2)
	for k, v := range e.Fields {
		m[k] = v
	}
	m["name"] = e.Name
	m["message"] = e.Message
	return json.Marshal(m)
}

// UnmarshalJSON reads the wire form of an error object back into an Error.
func (e *Error) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	e.Name, _ = m["name"].(string)
	e.Message, _ = m["message"].(string)
	delete(m, "name")
	delete(m, "message")
	if len(m) > 0 {
		e.Fields = m
	}
	if e.Name == "" {
		e.Name = "Error"
	}
	return nil
}

// IsBadToken reports whether the error says the client's token is bad (the client then
// drops it: socketcluster-client's isBadToken).
func (e *Error) IsBadToken() bool {
	b, _ := e.Fields["isBadToken"].(bool)
	return b
}

// NewError is a shorthand for an error with extra fields given as key, value pairs.
func NewError(name, message string, kv ...any) *Error {
	e := &Error{Name: name, Message: message}
	if len(kv) > 1 {
		e.Fields = make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			if k, ok := kv[i].(string); ok {
				e.Fields[k] = kv[i+1]
			}
		}
	}
	return e
}

// ErrSilentBlock makes middleware refuse an action without its own error: the client gets
// SilentMiddlewareBlockedError with type "inbound", as with SocketCluster's middleware.
var ErrSilentBlock = errors.New("blocked by middleware")

// WireError turns any error into the JSON error object of a response.
func WireError(err error, action string) json.RawMessage {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, ErrSilentBlock):
		e = NewError("SilentMiddlewareBlockedError", "The "+action+" AGAction was blocked by inbound middleware", "type", "inbound")
	default:
		e = &Error{Name: "Error", Message: err.Error()}
	}
	b, mErr := json.Marshal(e)
	if mErr != nil {
		b, _ = json.Marshal(&Error{Name: "Error", Message: e.Message})
	}
	return b
}

// Close codes with a meaning to socketcluster-client (docs/compatibility.md, "Close codes").
const (
	CloseNormal            = 1000
	CloseGoingAway         = 1001
	CloseProtocolError     = 1002
	CloseInvalidPayload    = 1007 // a text message that is not valid UTF-8
	CloseMessageTooBig     = 1009
	CloseInternalError     = 1011 // a handler, middleware or hook panicked
	CloseServerPingTimeout = 4000 // the client's code; a server may use it to make clients reconnect at once
	ClosePongTimeout       = 4001
	CloseHandshakeTimeout  = 4005
	CloseHandshakeRejected = 4008
	CloseBeforeHandshake   = 4009
	// CloseSlowConsumer is sockmesh's own code (application range, reconnect with backoff)
	// for a client whose send queue overflowed.
	CloseSlowConsumer = 4100
)
