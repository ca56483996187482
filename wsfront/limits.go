package wsfront

import (
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the abuse limits of a front. Every zero value means the documented default;
// a negative value disables that limit.
type Limits struct {
	// MaxConnections on this node; zero value 200,000.
	MaxConnections int
	// MaxConnectionsPerIP from one remote address; zero value 10,000.
	MaxConnectionsPerIP int
	// HandshakeRatePerIP is the sustained rate of new connections accepted from one remote
	// address, per second, with an equal burst; zero value 1,000/s.
	HandshakeRatePerIP float64
	// HandshakeRate paces new connections node-wide, per second (a burst of 10 ms' worth), so
	// that a storm of reconnecting clients (the clients of a node that died) is spread out
	// instead of crowding out this node's other clients. Serve accepts a connection only in
	// its turn (the rest wait in the kernel's accept queue); through ServeHTTP an upgrade
	// waits its turn up to HandshakeWait and is then refused with 503. Zero value 2,000/s;
	// negative: unpaced.
	HandshakeRate float64
	// HandshakeWait is the longest an upgrade served through ServeHTTP waits for
	// HandshakeRate; zero value 10 s.
	HandshakeWait time.Duration
	// PublishRate is the sustained rate of publications one connection may make, per
	// second, with an equal burst; zero value 5,000/s. An acknowledged publish over the
	// limit is answered with RateLimitError; a transmitted one is dropped and counted.
	PublishRate float64
	// EventRate is the sustained rate of application events (invokes and transmits, any
	// event not starting with #) one connection may send, per second, with an equal burst;
	// zero value 5,000/s. An invoke over the limit is answered with RateLimitError; a transmit
	// is dropped and counted (sockmesh_ws_events_total{kind="rate_limited"}).
	EventRate float64
	// AllowedOrigins lists the browser Origins that may connect: exact origins
	// ("https://app.example.com") or host patterns ("*.example.com", "https://*.example.com").
	// Empty allows every origin, as socketcluster-server does by default. Requests without
	// an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
}

func (l *Limits) setDefaults() {
	if l.MaxConnections == 0 {
		l.MaxConnections = 200_000
	}
	if l.MaxConnectionsPerIP == 0 {
		l.MaxConnectionsPerIP = 10_000
	}
	if l.HandshakeRatePerIP == 0 {
		l.HandshakeRatePerIP = 1000
	}
	if l.HandshakeRate == 0 {
		l.HandshakeRate = 2000
	}
	if l.HandshakeWait <= 0 {
		l.HandshakeWait = 10 * time.Second
	}
	if l.PublishRate == 0 {
		l.PublishRate = 5000
	}
	if l.EventRate == 0 {
		l.EventRate = 5000
	}
}

// admission tracks connections per remote IP and their accept rate. Entries of addresses with
// no connection are forgotten once idle for admissionIdle (their rate bucket has refilled by
// then), by a sweep that runs at most once per admissionSweepEvery: admit costs O(1) whatever
// the number of addresses, and the map holds only addresses seen recently.
type admission struct {
	lim       Limits
	mu        sync.Mutex
	total     int
	perIP     map[string]*ipState
	lastSweep time.Time
}

const (
	admissionIdle       = 10 * time.Second
	admissionSweepEvery = 10 * time.Second
)

type ipState struct {
	conns int
	rate  *rate.Limiter
	seen  time.Time
}

func newAdmission(l Limits) *admission {
	return &admission{lim: l, perIP: map[string]*ipState{}}
}

// admit reserves a connection slot for ip, or says why not (an HTTP status and message).
func (a *admission) admit(ip string, now time.Time) (int, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.lastSweep) >= admissionSweepEvery {
		a.sweep(now)
	}
	if a.lim.MaxConnections > 0 && a.total >= a.lim.MaxConnections {
		return http.StatusServiceUnavailable, "sockmesh: node connection limit reached"
	}
	st := a.perIP[ip]
	if st == nil {
		st = &ipState{}
		if a.lim.HandshakeRatePerIP > 0 {
			st.rate = rate.NewLimiter(rate.Limit(a.lim.HandshakeRatePerIP), max(1, int(a.lim.HandshakeRatePerIP)))
		}
		a.perIP[ip] = st
	}
	st.seen = now
	if a.lim.MaxConnectionsPerIP > 0 && st.conns >= a.lim.MaxConnectionsPerIP {
		return http.StatusTooManyRequests, "sockmesh: too many connections from " + ip
	}
	if st.rate != nil && !st.rate.AllowN(now, 1) {
		return http.StatusTooManyRequests, "sockmesh: connection rate limit exceeded for " + ip
	}
	st.conns++
	a.total++
	return 0, ""
}

func (a *admission) release(ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if st := a.perIP[ip]; st != nil {
		st.conns--
	}
}

// sweep forgets addresses with no connection that have been idle for admissionIdle; a.mu held.
func (a *admission) sweep(now time.Time) {
	a.lastSweep = now
	for ip, st := range a.perIP {
		if st.conns == 0 && now.Sub(st.seen) > admissionIdle {
			delete(a.perIP, ip)
		}
	}
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// originAllowed reports whether a browser Origin matches one of the allowed patterns.
func originAllowed(origin string, allowed []string) bool {
	if len(allowed) == 0 || origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	for _, p := range allowed {
		p = strings.TrimSpace(p)
		if p == "*" || strings.EqualFold(p, origin) {
			return true
		}
		scheme := ""
		if i := strings.Index(p, "://"); i >= 0 {
			scheme, p = p[:i], p[i+3:]
		}
		if scheme != "" && !strings.EqualFold(scheme, u.Scheme) {
			continue
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(host)); ok {
			return true
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
			return true
		}
	}
	return false
}
