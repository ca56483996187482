package wsfront

import (
	"context"
	"errors"

	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
)

// The front's side of access control: the policy and the hook from package access, run as
// middleware on this server's sockets.

// UsePolicy registers p as subscribe and publish middleware.
func (srv *Server) UsePolicy(p *access.Policy) {
	srv.UseSubscribe(func(_ context.Context, r *SubscribeRequest) error {
		return p.Allowed(r.Socket.Claims(), r.Channel, "subscribe")
	})
	srv.UsePublish(func(_ context.Context, r *PublishRequest) error {
		return p.Allowed(r.Socket.Claims(), r.Channel, "publish")
	})
}

func hookSocket(s *Socket) access.HookSocket {
	c := s.Claims()
	return access.HookSocket{ID: s.id, RemoteAddr: s.req.RemoteAddr, Authenticated: c != nil, Claims: c}
}

// UseHook registers h's middleware and its invoke fallback.
func (srv *Server) UseHook(h *access.Hook) {
	calls := srv.cfg.Metrics.HookCalls
	if h.Wants("handshake") {
		srv.UseHandshake(func(ctx context.Context, r *HandshakeRequest) error {
			_, err := h.Call(ctx, access.HookRequest{Action: "handshake", Socket: hookSocket(r.Socket)}, calls)
			return err
		})
	}
	if h.Wants("subscribe") {
		srv.UseSubscribe(func(ctx context.Context, r *SubscribeRequest) error {
			_, err := h.Call(ctx, access.HookRequest{Action: "subscribe", Socket: hookSocket(r.Socket), Channel: r.Channel, Data: r.Data}, calls)
			return err
		})
	}
	if h.Wants("publish") {
		srv.UsePublish(func(ctx context.Context, r *PublishRequest) error {
			resp, err := h.Call(ctx, access.HookRequest{Action: "publish", Socket: hookSocket(r.Socket), Channel: r.Channel, Data: r.Data}, calls)
			if err == nil && len(resp.Data) > 0 {
				r.Data = resp.Data
			}
			return err
		})
	}
	if h.Wants("invoke") {
		srv.HandleInvokeDefault(func(ctx context.Context, inv *Invocation) (any, error) {
			resp, err := h.Call(ctx, access.HookRequest{Action: "invoke", Socket: hookSocket(inv.Socket), Event: inv.Event, Data: inv.Data}, calls)
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
