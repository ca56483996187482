package wsfront

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/sockmesh/sockmesh/access"
)

// HandshakeRequest is what handshake middleware sees. Claims is nil unless the client
// presented a valid token.
type HandshakeRequest struct {
	Socket *Socket
	HTTP   *http.Request
	Claims access.Claims
}

// SubscribeRequest is what subscribe middleware sees.
type SubscribeRequest struct {
	Socket      *Socket
	Channel     string
	WaitForAuth bool
	// Data is the optional data the client attached to the subscription.
	Data json.RawMessage
}

// PublishRequest is what publish middleware sees; middleware may replace Data.
type PublishRequest struct {
	Socket  *Socket
	Channel string
	Data    json.RawMessage
}

// Middleware types. Returning nil allows the action; an *scproto.Error is sent to the client as
// is; scproto.ErrSilentBlock sends SilentMiddlewareBlockedError; any other error is sent with name
// "Error". A handshake error's "statusCode" field (default 4008) is the close code.
type (
	HandshakeMiddleware func(ctx context.Context, req *HandshakeRequest) error
	SubscribeMiddleware func(ctx context.Context, req *SubscribeRequest) error
	PublishMiddleware   func(ctx context.Context, req *PublishRequest) error
	// InvokeHandler answers a client invoke. Its result is marshalled as the response's data.
	InvokeHandler func(ctx context.Context, inv *Invocation) (any, error)
	// TransmitHandler receives a client transmit.
	TransmitHandler func(ctx context.Context, s *Socket, data json.RawMessage)
)
