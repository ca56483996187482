package mesh

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// addrLog logs an event once per remote IP address, so that a stranger hammering a port costs
// one log line, not one per connection. Past maxAddrs distinct addresses it stops remembering
// and logs a summary at most once per summaryEvery, with the count since the last one.
type addrLog struct {
	log *slog.Logger
	msg string

	mu         sync.Mutex
	seen       map[string]struct{}
	suppressed int
	lastSum    time.Time
}

const (
	maxAddrs     = 4096
	summaryEvery = 10 * time.Second
)

func newAddrLog(l *slog.Logger, msg string) *addrLog {
	return &addrLog{log: l, msg: msg, seen: make(map[string]struct{})}
}

// note logs (or counts) one event from remote.
func (a *addrLog) note(remote net.Addr, attrs ...any) {
	ip := "unknown"
	if ta, ok := remote.(*net.TCPAddr); ok {
		ip = ta.IP.String()
	} else if remote != nil {
		ip = remote.String()
	}
	a.mu.Lock()
	if _, ok := a.seen[ip]; ok {
		a.mu.Unlock()
		return
	}
	if len(a.seen) >= maxAddrs {
		a.suppressed++
		now := time.Now()
		if now.Sub(a.lastSum) < summaryEvery {
			a.mu.Unlock()
			return
		}
		n := a.suppressed
		a.suppressed, a.lastSum = 0, now
		a.mu.Unlock()
		a.log.Warn(a.msg+" (from too many addresses to log each)", append(attrs, "since_last", n)...)
		return
	}
	a.seen[ip] = struct{}{}
	a.mu.Unlock()
	a.log.Warn(a.msg+" (logged once per address; counted in the metrics)", append(attrs, "remote", ip)...)
}
