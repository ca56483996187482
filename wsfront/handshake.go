package wsfront

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
)

// handleFirst enforces the handshake rules: the first frame must be a #handshake invoke.
func (s *Socket) handleFirst(ctx context.Context, p *scproto.Packet) bool {
	m := s.srv.cfg.Metrics
	if p.Kind != scproto.KindEvent || p.Event != "#handshake" {
		m.HandshakeFailures.WithLabelValues("before_handshake").Inc()
		s.Close(scproto.CloseBeforeHandshake, "")
		return true // keep reading until the close completes
	}
	if !p.IsInvoke() {
		m.HandshakeFailures.WithLabelValues("malformed").Inc()
		s.Close(scproto.CloseHandshakeRejected, "")
		return true
	}
	s.handshake(ctx, p)
	return true
}

type handshakeData struct {
	AuthToken json.RawMessage
}

var handshakeFields = []string{"authToken"}

func (s *Socket) handshake(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	// Scanned, not unmarshalled: encoding/json's reflection grew the stack of every new
	// connection's reader (runtime.copystack was ~8 % of a connection storm).
	var hd handshakeData
	if len(p.Data) > 0 && !scproto.ScanFields(p.Data, handshakeFields, &hd.AuthToken) {
		hd = handshakeData{}
	}
	var authErr *scproto.Error
	var claims access.Claims
	tokenPresented := len(hd.AuthToken) > 0 && string(hd.AuthToken) != "null"
	if tokenPresented {
		if s.srv.auth == nil {
			authErr = scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true)
		} else {
			var exp time.Time
			claims, exp, authErr = s.srv.auth.Verify(hd.AuthToken)
			if authErr == nil {
				var tok string
				_ = json.Unmarshal(hd.AuthToken, &tok)
				s.setAuth(claims, tok, exp)
			}
		}
	}
	if len(s.srv.handshakeMW) > 0 {
		req := &HandshakeRequest{Socket: s, HTTP: s.req, Claims: claims}
		for _, mw := range s.srv.handshakeMW {
			if err := mw(ctx, req); err != nil {
				m.HandshakeFailures.WithLabelValues("rejected").Inc()
				s.Logger().Info("handshake rejected by middleware", "err", err)
				code := scproto.CloseHandshakeRejected
				var e *scproto.Error
				if errors.As(err, &e) {
					if sc, ok := toInt(e.Fields["statusCode"]); ok {
						code = sc
					}
				} else if !errors.Is(err, scproto.ErrSilentBlock) {
					err = scproto.NewError("HandshakeRejectedError", err.Error(), "statusCode", code)
				}
				s.reply(scproto.EncodeResponse(p.CID, nil, scproto.WireError(err, "handshake")))
				s.Close(code, "")
				return
			}
		}
	}
	if authErr != nil {
		m.AuthFailures.WithLabelValues(authErr.Name).Inc()
	}
	s.handshaken.Store(true)
	m.Handshakes.Inc()
	s.reply(s.statusResponse(p.CID, authErr))
	if authErr != nil && authErr.IsBadToken() {
		s.reply(scproto.EncodeEvent("#removeAuthToken", nil, 0))
	}
}

func (s *Socket) statusResponse(cid json.RawMessage, authErr *scproto.Error) []byte {
	if authErr == nil && scproto.PlainJSONString(s.id) {
		// The answer of every new connection: built by hand, in the field order below.
		b := make([]byte, 0, 80+len(s.id))
		b = append(b, `{"id":"`...)
		b = append(b, s.id...)
		b = append(b, `","pingTimeout":`...)
		b = scproto.AppendInt(b, s.srv.cfg.PingTimeout.Milliseconds())
		b = append(b, `,"isAuthenticated":`...)
		b = strconv.AppendBool(b, s.IsAuthenticated())
		b = append(b, '}')
		return scproto.EncodeResponse(cid, b, nil)
	}
	status := struct {
		ID              string         `json:"id"`
		PingTimeout     int64          `json:"pingTimeout"`
		AuthError       *scproto.Error `json:"authError,omitempty"`
		IsAuthenticated bool           `json:"isAuthenticated"`
	}{s.id, s.srv.cfg.PingTimeout.Milliseconds(), authErr, s.IsAuthenticated()}
	b, _ := json.Marshal(status)
	return scproto.EncodeResponse(cid, b, nil)
}

func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), true
	}
	return 0, false
}

func (s *Socket) authenticate(p *scproto.Packet) {
	if !p.IsInvoke() {
		s.srv.cfg.Metrics.HandshakeFailures.WithLabelValues("malformed_authenticate").Inc()
		s.Close(scproto.CloseHandshakeRejected, "")
		return
	}
	if s.srv.auth == nil {
		s.respond(p, nil, scproto.NewError("AuthTokenInvalidError", "invalid signature", "isBadToken", true), "authenticate")
		s.Deauthenticate()
		return
	}
	claims, exp, authErr := s.srv.auth.Verify(p.Data)
	if authErr != nil {
		s.srv.cfg.Metrics.AuthFailures.WithLabelValues(authErr.Name).Inc()
		if authErr.IsBadToken() {
			s.respond(p, nil, authErr, "authenticate")
			s.Deauthenticate()
			return
		}
		s.setAuth(nil, "", time.Time{})
		s.respond(p, map[string]any{"isAuthenticated": false, "authError": authErr}, nil, "authenticate")
		return
	}
	var tok string
	_ = json.Unmarshal(p.Data, &tok)
	s.setAuth(claims, tok, exp)
	s.respond(p, map[string]any{"isAuthenticated": true, "authError": nil}, nil, "authenticate")
}
