package wsfront

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sockmesh/sockmesh/scproto"
)

// Hook delegates decisions to the user's backend over HTTP: handshake, subscribe and
// publish (allow, deny with the client-visible error, or change the published data), and
// invoke events that no Go handler serves. Each call is a POST of a JSON HookRequest to
// URL; the backend answers with a HookResponse. The call runs on the connection's reader,
// so that connection waits for it (its frames stay in order); other connections do not.
type Hook struct {
	// URL receives the POSTs.
	URL string
	// Actions the hook decides, from "handshake", "subscribe", "publish", "invoke"; empty
	// means handshake and subscribe (publish per message is costly).
	Actions []string
	// Timeout of one call; zero value 2 s.
	Timeout time.Duration
	// FailOpen allows the action when the backend cannot be reached, times out or answers
	// with something other than 200 and a valid body. The default (false) denies it with
	// HookUnavailableError: an access decision nobody could make is a refusal.
	FailOpen bool
	// Header is sent with every call (e.g. an Authorization for the backend).
	Header http.Header
	Client *http.Client
}

// HookRequest is the body of a hook call.
type HookRequest struct {
	Action  string          `json:"action"`
	Socket  HookSocket      `json:"socket"`
	Channel string          `json:"channel,omitempty"`
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// HookSocket describes the client in a hook call.
type HookSocket struct {
	ID            string `json:"id"`
	RemoteAddr    string `json:"remote_addr"`
	Authenticated bool   `json:"authenticated"`
	Claims        Claims `json:"claims,omitempty"`
}

// HookResponse is the backend's answer: allow, or an error the client sees; for publish,
// data replaces the published data; for invoke, data is the answer, and SetAuthClaims (when
// present) logs the socket in: the node signs a token with these claims and sends it with
// #setAuthToken after the answer — this is how login is delegated to the backend.
type HookResponse struct {
	Allow         bool            `json:"allow"`
	Error         *scproto.Error  `json:"error,omitempty"`
	Data          json.RawMessage `json:"data,omitempty"`
	SetAuthClaims Claims          `json:"set_auth_claims,omitempty"`
}

func (h *Hook) wants(action string) bool {
	if len(h.Actions) == 0 {
		return action == "handshake" || action == "subscribe"
	}
	for _, a := range h.Actions {
		if a == action {
			return true
		}
	}
	return false
}

// call asks the backend; the error is what the client should see when the action is
// refused (nil: allowed).
func (h *Hook) call(ctx context.Context, req HookRequest, m *Metrics) (*HookResponse, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	for k, v := range h.Header {
		hreq.Header[k] = v
	}
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(hreq)
	var out HookResponse
	if err == nil {
		func() {
			defer resp.Body.Close()
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("hook answered %s", resp.Status)
			default:
				err = json.Unmarshal(b, &out)
			}
		}()
	}
	if err != nil {
		m.HookCalls.WithLabelValues(req.Action, "failed").Inc()
		if h.FailOpen {
			return &HookResponse{Allow: true}, nil
		}
		return nil, scproto.NewError("HookUnavailableError", "The "+req.Action+" could not be authorized: the decision service is unavailable")
	}
	if !out.Allow {
		m.HookCalls.WithLabelValues(req.Action, "denied").Inc()
		if out.Error == nil {
			return nil, scproto.ErrSilentBlock
		}
		return nil, out.Error
	}
	m.HookCalls.WithLabelValues(req.Action, "allowed").Inc()
	return &out, nil
}

func hookSocket(s *Socket) HookSocket {
	c := s.Claims()
	return HookSocket{ID: s.id, RemoteAddr: s.req.RemoteAddr, Authenticated: c != nil, Claims: c}
}

// Install registers the hook's middleware and its invoke fallback on srv.
func (h *Hook) Install(srv *Server) {
	m := srv.cfg.Metrics
	if h.wants("handshake") {
		srv.UseHandshake(func(ctx context.Context, r *HandshakeRequest) error {
			_, err := h.call(ctx, HookRequest{Action: "handshake", Socket: hookSocket(r.Socket)}, m)
			return err
		})
	}
	if h.wants("subscribe") {
		srv.UseSubscribe(func(ctx context.Context, r *SubscribeRequest) error {
			_, err := h.call(ctx, HookRequest{Action: "subscribe", Socket: hookSocket(r.Socket), Channel: r.Channel, Data: r.Data}, m)
			return err
		})
	}
	if h.wants("publish") {
		srv.UsePublish(func(ctx context.Context, r *PublishRequest) error {
			resp, err := h.call(ctx, HookRequest{Action: "publish", Socket: hookSocket(r.Socket), Channel: r.Channel, Data: r.Data}, m)
			if err == nil && len(resp.Data) > 0 {
				r.Data = resp.Data
			}
			return err
		})
	}
	if h.wants("invoke") {
		srv.HandleInvokeDefault(func(ctx context.Context, inv *Invocation) (any, error) {
			resp, err := h.call(ctx, HookRequest{Action: "invoke", Socket: hookSocket(inv.Socket), Event: inv.Event, Data: inv.Data}, m)
			if err != nil {
				if errors.Is(err, scproto.ErrSilentBlock) {
					return nil, scproto.NewError("UnhandledEventError", "No handler is registered for the "+inv.Event+" event")
				}
				return nil, err
			}
			if resp.SetAuthClaims != nil {
				inv.AfterReply(func() {
					if err := inv.Socket.SetAuthToken(resp.SetAuthClaims, 0); err != nil {
						srv.cfg.Logger.Warn("hook login: cannot issue a token", "err", err)
					}
				})
			}
			return resp.Data, nil
		})
	}
}
