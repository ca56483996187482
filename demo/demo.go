package demo

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
	"github.com/sockmesh/sockmesh/wsfront"
)

// Install registers the demo application on the front f (publish publishes cluster-wide, as
// the node does): a few procedures and access rules for
// trying sockmesh out and for compatibility tests. It is NOT for production: anyone can log
// in as anyone.
//
// Procedures: echo, login {username[, expiresIn s]}, logout, whoami, fail, kick {channel[,
// message]}, serverTransmit {event, data}, serverInvoke {event, data}, serverPublish
// {channel, data}, disconnectMe {code, reason}. Subscribing to denied.* is refused;
// private.* requires authentication.
func Install(f *wsfront.Server, publish func(channel string, data json.RawMessage) error) {
	f.HandleInvoke("echo", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		return inv.Data, nil
	})
	f.HandleInvoke("login", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct {
			Username  *string `json:"username"`
			ExpiresIn float64 `json:"expiresIn"`
		}
		if json.Unmarshal(inv.Data, &req) != nil || req.Username == nil {
			return nil, scproto.NewError("InvalidArgumentsError", `login expects {"username": string}`)
		}
		exp := time.Duration(req.ExpiresIn * float64(time.Second))
		// The reply goes first, as socketcluster-server writes it, then #setAuthToken.
		var signErr error
		inv.AfterReply(func() {
			if signErr = inv.Socket.SetAuthToken(access.Claims{"username": *req.Username}, exp); signErr != nil {
				inv.Socket.Close(4002, "failed to sign auth token")
			}
		})
		return "ok", nil
	})
	f.HandleInvoke("logout", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		inv.AfterReply(inv.Socket.Deauthenticate)
		return nil, nil
	})
	f.HandleInvoke("whoami", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		return inv.Socket.Claims(), nil
	})
	f.HandleInvoke("fail", func(_ context.Context, _ *wsfront.Invocation) (any, error) {
		return nil, scproto.NewError("CustomError", "Something went wrong", "code", 123)
	})
	f.HandleInvoke("kick", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct{ Channel, Message string }
		if json.Unmarshal(inv.Data, &req) != nil || req.Channel == "" {
			return nil, scproto.NewError("InvalidArgumentsError", `kick expects {"channel": string}`)
		}
		inv.AfterReply(func() { inv.Socket.KickOut(req.Channel, req.Message) })
		return nil, nil
	})
	f.HandleInvoke("serverTransmit", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct {
			Event string
			Data  json.RawMessage
		}
		if json.Unmarshal(inv.Data, &req) != nil || req.Event == "" {
			return nil, scproto.NewError("InvalidArgumentsError", `serverTransmit expects {"event": string, "data": any}`)
		}
		inv.AfterReply(func() { _ = inv.Socket.Transmit(req.Event, req.Data) })
		return nil, nil
	})
	f.HandleInvoke("serverInvoke", func(ctx context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct {
			Event string
			Data  json.RawMessage
		}
		if json.Unmarshal(inv.Data, &req) != nil || req.Event == "" {
			return nil, scproto.NewError("InvalidArgumentsError", `serverInvoke expects {"event": string, "data": any}`)
		}
		inv.Async(func() (any, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			d, err := inv.Socket.Invoke(ctx, req.Event, req.Data)
			if err != nil {
				return nil, err
			}
			return map[string]json.RawMessage{"data": d}, nil
		})
		return nil, nil
	})
	f.HandleInvoke("serverPublish", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct {
			Channel string
			Data    json.RawMessage
		}
		if json.Unmarshal(inv.Data, &req) != nil {
			return nil, scproto.NewError("InvalidArgumentsError", `serverPublish expects {"channel": string, "data": any}`)
		}
		if err := publish(req.Channel, req.Data); err != nil {
			return nil, scproto.NewError("InvalidActionError", err.Error())
		}
		return nil, nil
	})
	f.HandleInvoke("disconnectMe", func(_ context.Context, inv *wsfront.Invocation) (any, error) {
		var req struct {
			Code   int
			Reason string
		}
		if json.Unmarshal(inv.Data, &req) != nil || req.Code < 1000 || req.Code > 4999 {
			return nil, scproto.NewError("InvalidArgumentsError", `disconnectMe expects {"code": 1000..4999, "reason": string}`)
		}
		inv.AfterReply(func() { inv.Socket.Close(req.Code, req.Reason) })
		return nil, nil
	})
	f.UseSubscribe(func(_ context.Context, req *wsfront.SubscribeRequest) error {
		switch {
		case strings.HasPrefix(req.Channel, "denied."):
			return scproto.NewError("SubscribeDeniedError", "Subscription to "+req.Channel+" is denied")
		case strings.HasPrefix(req.Channel, "private.") && !req.Socket.IsAuthenticated():
			return scproto.NewError("AuthRequiredError", "Subscription to "+req.Channel+" requires authentication")
		}
		return nil
	})
}
