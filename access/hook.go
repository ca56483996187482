package access

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// DefaultHookTimeout is Hook.Timeout's zero value.
const DefaultHookTimeout = 2 * time.Second

// DefaultHookActions are what a hook with no Actions decides: per-message publish calls are
// costly, so they are asked for explicitly.
func DefaultHookActions() []string { return []string{"handshake", "subscribe"} }

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

// Wants reports whether the hook decides action.
func (h *Hook) Wants(action string) bool {
	if len(h.Actions) == 0 {
		return slices.Contains(DefaultHookActions(), action)
	}
	for _, a := range h.Actions {
		if a == action {
			return true
		}
	}
	return false
}

// Call asks the backend; the error is what the client should see when the action is refused
// (nil: allowed). calls, when not nil, counts the outcome by action and "allowed", "denied"
// or "failed".
func (h *Hook) Call(ctx context.Context, req HookRequest, calls *prometheus.CounterVec) (*HookResponse, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
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
		count(calls, req.Action, "failed")
		if h.FailOpen {
			return &HookResponse{Allow: true}, nil
		}
		return nil, scproto.NewError("HookUnavailableError", "The "+req.Action+" could not be authorized: the decision service is unavailable")
	}
	if !out.Allow {
		count(calls, req.Action, "denied")
		if out.Error == nil {
			return nil, scproto.ErrSilentBlock
		}
		return nil, out.Error
	}
	count(calls, req.Action, "allowed")
	return &out, nil
}

func count(calls *prometheus.CounterVec, action, outcome string) {
	if calls != nil {
		calls.WithLabelValues(action, outcome).Inc()
	}
}
