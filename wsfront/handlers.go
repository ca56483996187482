package wsfront

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/sockmesh/sockmesh/scproto"
)

// handle dispatches one packet after the handshake.
func (s *Socket) handle(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	switch p.Kind {
	case scproto.KindPong:
		s.checkExpiry()
		return
	case scproto.KindResponse:
		s.mu.Lock()
		ch := s.calls[p.RID]
		s.mu.Unlock()
		if ch != nil {
			select {
			case ch <- reply{data: p.Data, err: p.Error}:
			default:
			}
		}
		return
	case scproto.KindEvent:
	default:
		m.RawFrames.Inc()
		return
	}
	switch p.Event {
	case "#handshake":
		s.reply(s.statusResponse(p.CID, nil))
		return
	case "#authenticate":
		s.authenticate(p)
		return
	case "#removeAuthToken":
		s.setAuth(nil, "", time.Time{})
		return
	}
	s.checkExpiry()
	switch p.Event {
	case "#subscribe":
		s.subscribe(ctx, p)
	case "#unsubscribe":
		s.unsubscribe(p)
	case "#publish":
		s.publish(ctx, p)
	default:
		s.event(ctx, p)
	}
}

// respond answers p from the reader goroutine (see reply); nothing for a transmit.
func (s *Socket) respond(p *scproto.Packet, data any, err error, action string) {
	if fr := responseFrame(p, data, err, action); fr != nil {
		s.reply(fr)
	}
}

func responseFrame(p *scproto.Packet, data any, err error, action string) []byte {
	if !p.IsInvoke() {
		return nil
	}
	if err != nil {
		return scproto.EncodeResponse(p.CID, nil, scproto.WireError(err, action))
	}
	raw, mErr := marshalData(data)
	if mErr != nil {
		return scproto.EncodeResponse(p.CID, nil, scproto.WireError(scproto.NewError("InvalidActionError", "response data could not be encoded: "+mErr.Error()), action))
	}
	return scproto.EncodeResponse(p.CID, raw, nil)
}

type subscribeData struct {
	Channel     json.RawMessage `json:"channel"`
	WaitForAuth bool            `json:"waitForAuth"`
	Data        json.RawMessage `json:"data"`
}

func (s *Socket) subscribe(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	var sd subscribeData
	if len(p.Data) == 0 || json.Unmarshal(p.Data, &sd) != nil || len(sd.Channel) == 0 || sd.Channel[0] != '"' {
		m.SubscribeFailures.WithLabelValues("malformed").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Subscribe channel name was malformatted"), "subscribe")
		return
	}
	ch, why := scproto.CheckChannel(sd.Channel, s.srv.cfg.MaxChannelLength)
	if why != "" {
		m.SubscribeFailures.WithLabelValues("invalid_channel").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", why), "subscribe")
		return
	}
	s.mu.Lock()
	_, already := s.subs[ch]
	n := len(s.subs)
	s.mu.Unlock()
	if already {
		s.respond(p, nil, nil, "subscribe")
		return
	}
	if n >= s.srv.cfg.MaxSubscriptions {
		m.SubscribeFailures.WithLabelValues("limit").Inc()
		s.respond(p, nil, scproto.NewError("BrokerError", "Failed to subscribe socket to the "+ch+" channel - InvalidActionError: Socket "+s.id+" tried to exceed the channel subscription limit of "+strconv.Itoa(s.srv.cfg.MaxSubscriptions)), "subscribe")
		return
	}
	if len(s.srv.subscribeMW) > 0 {
		s.flushFanout() // middleware may take its time: what is collected goes out first
		req := &SubscribeRequest{Socket: s, Channel: ch, WaitForAuth: sd.WaitForAuth, Data: scproto.NullToNil(sd.Data)}
		for _, mw := range s.srv.subscribeMW {
			if err := mw(ctx, req); err != nil {
				m.SubscribeFailures.WithLabelValues("denied").Inc()
				s.respond(p, nil, err, "subscribe")
				return
			}
		}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	if rb, ok := s.srv.broker.(RecoveringBroker); ok && len(sd.Data) > 0 {
		// The answer may come later, from another goroutine (a peer is asked for what this
		// node did not receive): it keeps its own copy of the call id.
		call := &scproto.Packet{CID: bytes.Clone(p.CID)}
		handled := rb.SubscribeRecover(s, ch, sd.Data, func(data any) {
			m.Subscribes.Inc()
			if fr := responseFrame(call, data, nil, "subscribe"); fr != nil {
				s.enqueue(fr)
			}
		}, func(ans any) {
			// socketcluster-client ignores the acknowledgement's data, and the answer may come
			// after it: the answer is an event (docs/recovery.md).
			_ = s.Transmit("sockmesh:recovery", ans)
		})
		if handled {
			return
		}
	}
	s.srv.broker.Subscribe(s, ch)
	m.Subscribes.Inc()
	s.respond(p, nil, nil, "subscribe")
}

func (s *Socket) unsubscribe(p *scproto.Packet) {
	var ch string
	if json.Unmarshal(p.Data, &ch) != nil {
		// {"channel": name}, as sacOO7's Go and Python clients send it (socketcluster-server
		// takes the object itself for the name and answers "not subscribed", leaving the
		// subscription in place): the name is unambiguous, so it is honoured.
		var obj struct{ Channel *string }
		if json.Unmarshal(p.Data, &obj) == nil && obj.Channel != nil {
			ch = *obj.Channel
		}
	}
	if ch == "" {
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Unsubscribe channel name was malformatted"), "unsubscribe")
		return
	}
	s.mu.Lock()
	_, ok := s.subs[ch]
	delete(s.subs, ch)
	s.mu.Unlock()
	if !ok {
		s.respond(p, nil, scproto.NewError("BrokerError", "Failed to unsubscribe socket from the "+ch+" channel - InvalidActionError: Socket "+s.id+" tried to unsubscribe from a channel which it is not subscribed to"), "unsubscribe")
		return
	}
	s.srv.broker.Unsubscribe(s, ch)
	s.respond(p, nil, nil, "unsubscribe")
}

func (s *Socket) publish(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	var pd scproto.PublishData
	if len(p.Data) == 0 || !pd.Scan(p.Data) || len(pd.Channel) == 0 || pd.Channel[0] != '"' {
		m.PublishFailures.WithLabelValues("malformed").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", "Publish channel name was malformatted"), "publish")
		return
	}
	ch, why := scproto.CheckChannel(pd.Channel, s.srv.cfg.MaxChannelLength)
	if why != "" {
		m.PublishFailures.WithLabelValues("invalid_channel").Inc()
		s.respond(p, nil, scproto.NewError("InvalidActionError", why), "publish")
		return
	}
	if s.pubRate != nil && !s.pubRate.Allow() {
		m.PublishFailures.WithLabelValues("rate_limit").Inc()
		s.respond(p, nil, scproto.NewError("RateLimitError", "Publish rate limit of "+strconv.Itoa(int(s.srv.cfg.Limits.PublishRate))+"/s exceeded"), "publish")
		return
	}
	data := pd.Data
	if len(s.srv.publishMW) > 0 {
		s.flushFanout() // middleware may take its time: what is collected goes out first
		req := &PublishRequest{Socket: s, Channel: ch, Data: data}
		for _, mw := range s.srv.publishMW {
			if err := mw(ctx, req); err != nil {
				m.PublishFailures.WithLabelValues("denied").Inc()
				s.respond(p, nil, err, "publish")
				return
			}
		}
		data = req.Data
	}
	if bb := s.srv.fanoutBroker; bb != nil {
		bb.PublishIn(&s.fanout, ch, data)
	} else {
		s.srv.broker.Publish(ch, data)
	}
	m.Publishes.Inc()
	s.respond(p, nil, nil, "publish")
}

func (s *Socket) event(ctx context.Context, p *scproto.Packet) {
	m := s.srv.cfg.Metrics
	if s.eventRate != nil && !s.eventRate.Allow() {
		m.Events.WithLabelValues("rate_limited").Inc()
		if p.IsInvoke() {
			s.respond(p, nil, scproto.NewError("RateLimitError", "Event rate limit of "+strconv.Itoa(int(s.srv.cfg.Limits.EventRate))+"/s exceeded"), "invoke")
		}
		return
	}
	s.flushFanout() // handlers may take their time: what is collected goes out first
	if !p.IsInvoke() {
		if h := s.srv.transmits[p.Event]; h != nil {
			h(ctx, s, p.Data)
			m.Events.WithLabelValues("transmit").Inc()
		} else {
			m.Events.WithLabelValues("unhandled_transmit").Inc()
		}
		return
	}
	h := s.srv.invokes[p.Event]
	if h == nil {
		h = s.srv.invokeDefault
	}
	if h == nil {
		m.Events.WithLabelValues("unhandled_invoke").Inc()
		s.respond(p, nil, scproto.NewError("UnhandledEventError", "No handler is registered for the "+p.Event+" event"), "invoke")
		return
	}
	m.Events.WithLabelValues("invoke").Inc()
	inv := &Invocation{Socket: s, Event: p.Event, Data: p.Data, p: p}
	defer func() {
		if inv.async && !inv.refused {
			close(inv.handled) // also when h panicked after Async: its goroutine must not wait for ever
		}
	}()
	data, err := h(ctx, inv)
	if inv.refused {
		m.Events.WithLabelValues("async_refused").Inc()
		s.respond(p, nil, scproto.NewError("TooManyPendingInvokesError", strconv.Itoa(s.srv.cfg.MaxAsyncInvokes)+" asynchronous invokes of this connection are still being answered"), "invoke")
		return
	}
	if inv.async {
		return
	}
	s.respond(p, data, err, "invoke")
	for _, f := range inv.after {
		f()
	}
}
