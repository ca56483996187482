package wsfront

import (
	"fmt"
	"runtime"
	"time"
)

// sweeper is the one goroutine that keeps time for every socket: handshake timeouts, pong
// timeouts and pings. A connection therefore needs no timer or ticker of its own.
func (s *Server) sweeper() {
	defer s.wg.Done()
	// A short tick keeps each tick's share of the pings (and so of the pong wake-ups) small;
	// a sweep is a few field reads per socket.
	tick := min(s.cfg.PingInterval, s.cfg.HandshakeTimeout, s.cfg.PingTimeout) / 16
	tick = min(max(tick, 10*time.Millisecond), 500*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var socks []*Socket
	var opened, released uint64 // connection counts at the last tick and the last release
	for {
		select {
		case <-s.stopSweep:
			return
		case now := <-t.C:
			if share, changed := s.load.sample(now); changed {
				s.cfg.Logger.Debug("write window", "on", s.load.busy.Load(), "cpu_share", fmt.Sprintf("%.2f", share))
			}
			if n := s.idSeq.Load(); s.cfg.ReleaseMemoryAfter > 0 {
				if n == opened && n-released >= uint64(s.cfg.ReleaseMemoryAfter) {
					start := time.Now()
					runtime.GC()
					released = n
					s.cfg.Logger.Info("connection storm over: garbage collected, freed memory goes back to the OS in the background", "took", time.Since(start).String())
				}
				opened = n
			}
			s.mu.Lock()
			socks = socks[:0]
			for k := range s.sockets {
				socks = append(socks, k)
			}
			s.mu.Unlock()
			if prev := s.lastTick.Load(); now.UnixNano()-prev > int64(s.cfg.PingTimeout) {
				s.expireAll(socks, prev, time.Duration(now.UnixNano()-prev))
			}
			s.lastTick.Store(now.UnixNano())
			for _, sk := range socks {
				sk.sweep(now)
			}
			clear(socks)
		}
	}
}

// expireAll drops every connection opened before the process stalled at prev: their clients
// stopped hearing pings for longer than the ping timeout, gave up and (socketcluster-client)
// reconnected elsewhere, so what they sent before is stale — publishing it now would deliver
// it after what they published since, out of order. The connection is cut without a close
// handshake (its client is gone) and without reading further.
func (s *Server) expireAll(socks []*Socket, prev int64, stalled time.Duration) {
	n := 0
	for _, sk := range socks {
		if sk.born.UnixNano() <= prev {
			sk.expired.Store(true)
			sk.abort()
			n++
		}
	}
	if n > 0 {
		s.cfg.Metrics.PongTimeouts.Add(float64(n))
		s.cfg.Logger.Warn("this process did not run for longer than the ping timeout: its clients have given up; connections dropped, what they sent since is ignored",
			"stalled", stalled.Round(time.Millisecond), "ping_timeout", s.cfg.PingTimeout, "connections", n)
	}
}
