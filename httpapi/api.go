package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sockmesh/sockmesh/access"
	"github.com/sockmesh/sockmesh/scproto"
)

// The HTTP API (node.Config.APIAddr, guarded by node.Config.APIKey) lets backends act on
// channels:
//
//	POST /api/publish     {"channel": C, "data": D}
//	POST /api/broadcast   {"channels": [C...], "data": D}
//	GET  /api/channels    ?pattern=GLOB
//	POST /api/kick        {"channel": C[, "message": M]}
//	POST /api/disconnect  {"claim": K, "value": V[, "code": N, "reason": R]}
//	GET  /api/info
//
// Cluster-wide calls (channels, kick, disconnect) are answered locally and fanned out to
// every alive peer's admin listener under /local/ (same key, short timeout); the answer
// says which nodes answered. docs/api.md and docs/openapi.yaml describe the shapes.

const (
	// FanoutTimeout bounds one peer's answer to a cluster-wide API call.
	FanoutTimeout = 2 * time.Second
	// MaxBroadcastChannels bounds the channels of one /api/broadcast call.
	MaxBroadcastChannels = 1000
	// DefaultDisconnectCode is the close code of /api/disconnect without one:
	// socketcluster-client does not reconnect on codes 4500 and above.
	DefaultDisconnectCode = 4500
)

// APIError is the body of every API error answer: {"error": {"code": ..., "message": ...}}.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// NodeResult is one node's part of a cluster-wide API call.
type NodeResult struct {
	Node  string `json:"node"`
	OK    bool   `json:"ok"`
	Count int    `json:"count"`
	Error string `json:"error,omitempty"`
}

// ChannelInfo is one active channel of /api/channels.
type ChannelInfo struct {
	Channel     string         `json:"channel"`
	Subscribers int            `json:"subscribers"`
	Nodes       map[string]int `json:"nodes"`
}

// ChannelsAnswer is the body of GET /api/channels.
type ChannelsAnswer struct {
	Channels []ChannelInfo `json:"channels"`
	Nodes    []NodeResult  `json:"nodes"`
	Complete bool          `json:"complete"`
}

// CountAnswer is the body of /api/kick and /api/disconnect.
type CountAnswer struct {
	Channel  string       `json:"channel,omitempty"`
	Total    int          `json:"total"`
	Nodes    []NodeResult `json:"nodes"`
	Complete bool         `json:"complete"`
}

type localChannels struct {
	Node     string         `json:"node"`
	Channels map[string]int `json:"channels"`
}

type kickRequest struct {
	Channel *string `json:"channel"`
	Message string  `json:"message"`
}

type disconnectRequest struct {
	Claim  string          `json:"claim"`
	Value  json.RawMessage `json:"value"`
	Code   int             `json:"code"`
	Reason string          `json:"reason"`
}

// Node is what the API acts on: the local node.
type Node interface {
	// Name is the node's logical name.
	Name() string
	// Info is the body of /api/info (the node's view of the cluster).
	Info() any
	// Peers are the other alive nodes with an admin listener: who a cluster-wide call asks.
	Peers() []Peer
	// Publish publishes data on channel, cluster-wide.
	Publish(channel string, data json.RawMessage)
	// LocalChannels are the channels with local subscribers, and how many.
	LocalChannels() map[string]int
	// KickChannel kicks every local subscriber off channel and returns how many there were.
	KickChannel(channel, message string) int
	// DisconnectClaim closes every local connection whose token claim equals value and
	// returns how many there were.
	DisconnectClaim(claim, value string, code int, reason string) int
}

// Peer is another node a cluster-wide call is sent to.
type Peer struct {
	Name  string
	Admin string // base URL of its admin listener
}

// Config is the API's part of the node's configuration.
type Config struct {
	// Key guards every endpoint; empty disables the API.
	Key string
	// Policy, with EnforcePolicy, applies the access policy's publish rules to API
	// publications (as an unauthenticated client).
	Policy        *access.Policy
	EnforcePolicy bool
	// MaxPayload and MaxChannelLength are the front's limits, applied to API calls too.
	MaxPayload       int64
	MaxChannelLength int
}

// API serves the HTTP API and the node-to-node endpoints of its cluster-wide calls.
type API struct {
	n        Node
	cfg      Config
	keyHash  [32]byte
	enabled  bool
	requests *prometheus.CounterVec
	client   *http.Client
}

// New returns the API of n; its request counter is registered with reg when the API is
// enabled.
func New(n Node, cfg Config, reg prometheus.Registerer) *API {
	a := &API{
		n:       n,
		cfg:     cfg,
		enabled: cfg.Key != "",
		keyHash: sha256.Sum256([]byte(cfg.Key)),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockmesh_api_requests_total",
			Help: "HTTP API requests (and the /local/ calls of peers), by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		client: &http.Client{Timeout: FanoutTimeout, Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second,
		}},
	}
	if a.enabled && reg != nil {
		reg.MustRegister(a.requests)
	}
	return a
}

// Authorized reports whether r presents the API key. It compares in constant time (hashes first, so that not even
// the key's length leaks).
func (a *API) Authorized(r *http.Request) bool {
	got := r.Header.Get("X-API-Key")
	if got == "" {
		h := r.Header.Get("Authorization")
		if len(h) > 7 && strings.EqualFold(h[:7], "apikey ") {
			got = strings.TrimSpace(h[7:])
		}
	}
	if got == "" || !a.enabled {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], a.keyHash[:]) == 1
}

type apiFunc func(r *http.Request) (any, *APIError)

// route wraps an endpoint: key check, method check, JSON answer, counting.
func (a *API) route(mux *http.ServeMux, pattern, endpoint, method string, f apiFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		var body any
		var e *APIError
		switch {
		case !a.enabled:
			e = apiErr(http.StatusNotFound, "api_disabled", "the HTTP API is not enabled on this node (no api-key)")
		case !a.Authorized(r):
			w.Header().Set("WWW-Authenticate", `apikey realm="sockmesh"`)
			e = apiErr(http.StatusUnauthorized, "unauthorized", `missing or wrong API key (header "Authorization: apikey <key>" or "X-API-Key: <key>")`)
		case method != "" && r.Method != method:
			w.Header().Set("Allow", method)
			e = apiErr(http.StatusMethodNotAllowed, "method_not_allowed", "%s %s: use %s", r.Method, r.URL.Path, method)
		case f == nil:
			e = apiErr(http.StatusNotFound, "not_found", "no API endpoint %s", r.URL.Path)
		default:
			body, e = f(r)
		}
		code := http.StatusOK
		if e != nil {
			code, body = e.Status, map[string]any{"error": e}
		}
		a.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// Handler is the API listener's mux.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.route(mux, "/api/publish", "publish", http.MethodPost, a.publish)
	a.route(mux, "/api/broadcast", "broadcast", http.MethodPost, a.broadcast)
	a.route(mux, "/api/channels", "channels", http.MethodGet, a.channels)
	a.route(mux, "/api/kick", "kick", http.MethodPost, a.kick)
	a.route(mux, "/api/disconnect", "disconnect", http.MethodPost, a.disconnect)
	a.route(mux, "/api/info", "info", http.MethodGet, func(*http.Request) (any, *APIError) { return a.n.Info(), nil })
	a.route(mux, "/", "other", "", nil)
	return mux
}

// RegisterLocal adds the node-to-node endpoints of cluster-wide calls to the admin mux.
func (a *API) RegisterLocal(mux *http.ServeMux) {
	a.route(mux, "/local/channels", "local_channels", http.MethodGet, func(r *http.Request) (any, *APIError) {
		pat := r.URL.Query().Get("pattern")
		if e := checkPattern(pat); e != nil {
			return nil, e
		}
		return localChannels{Node: a.n.Name(), Channels: a.localChannels(pat)}, nil
	})
	a.route(mux, "/local/kick", "local_kick", http.MethodPost, func(r *http.Request) (any, *APIError) {
		_, res, e := a.kickHere(r)
		if e != nil {
			return nil, e
		}
		return res, nil
	})
	a.route(mux, "/local/disconnect", "local_disconnect", http.MethodPost, func(r *http.Request) (any, *APIError) {
		_, res, e := a.disconnectHere(r)
		if e != nil {
			return nil, e
		}
		return res, nil
	})
}

func (a *API) maxPayload() int64 { return a.cfg.MaxPayload }

// decode reads one JSON object into v; the body may hold the largest payload plus the
// largest broadcast list.
func (a *API) decode(r *http.Request, v any) *APIError {
	limit := a.maxPayload() + int64(MaxBroadcastChannels*(a.cfg.MaxChannelLength+8)) + 4096
	body := http.MaxBytesReader(nil, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return apiErr(http.StatusRequestEntityTooLarge, "payload_too_large", "request body over %d bytes", limit)
		}
		if errors.Is(err, io.EOF) {
			return apiErr(http.StatusBadRequest, "bad_json", "empty request body: a JSON object is expected")
		}
		return apiErr(http.StatusBadRequest, "bad_json", "request body is not the expected JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return apiErr(http.StatusBadRequest, "bad_json", "request body has data after the JSON object")
	}
	return nil
}

func (a *API) checkChannel(ch *string) *APIError {
	if ch == nil {
		return apiErr(http.StatusBadRequest, "invalid_channel", `"channel" is required`)
	}
	if why := scproto.ValidChannel(*ch, a.cfg.MaxChannelLength); why != "" {
		return apiErr(http.StatusBadRequest, "invalid_channel", "channel %q: %s", *ch, why)
	}
	return nil
}

// checkData validates a publication's data and returns it compacted.
func (a *API) checkData(d json.RawMessage) (json.RawMessage, *APIError) {
	if len(d) == 0 {
		return nil, apiErr(http.StatusBadRequest, "bad_json", `"data" is required (any JSON value; null for none)`)
	}
	if int64(len(d)) > a.maxPayload() {
		return nil, apiErr(http.StatusRequestEntityTooLarge, "payload_too_large", "data is %d bytes, over the node's max payload of %d", len(d), a.maxPayload())
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, d); err != nil {
		return nil, apiErr(http.StatusBadRequest, "bad_json", "data: %v", err)
	}
	return buf.Bytes(), nil
}

// allowed applies the access policy's publish rules to an API publication when
// Config.EnforcePolicy asks for it: the API publishes as an unauthenticated client.
func (a *API) allowed(ch string) *APIError {
	if !a.cfg.EnforcePolicy || a.cfg.Policy == nil {
		return nil
	}
	if err := a.cfg.Policy.Allowed(nil, ch, "publish"); err != nil {
		msg := err.Error()
		var we *scproto.Error
		if errors.As(err, &we) {
			msg = we.Name + ": " + we.Message
		}
		return apiErr(http.StatusForbidden, "forbidden", "%s", msg)
	}
	return nil
}

type publishRequest struct {
	Channel *string         `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

type broadcastRequest struct {
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
}

func (a *API) publish(r *http.Request) (any, *APIError) {
	var req publishRequest
	if e := a.decode(r, &req); e != nil {
		return nil, e
	}
	if e := a.checkChannel(req.Channel); e != nil {
		return nil, e
	}
	data, e := a.checkData(req.Data)
	if e != nil {
		return nil, e
	}
	if e := a.allowed(*req.Channel); e != nil {
		return nil, e
	}
	a.n.Publish(*req.Channel, data)
	return map[string]any{"ok": true, "channel": *req.Channel}, nil
}

func (a *API) broadcast(r *http.Request) (any, *APIError) {
	var req broadcastRequest
	if e := a.decode(r, &req); e != nil {
		return nil, e
	}
	if len(req.Channels) == 0 || len(req.Channels) > MaxBroadcastChannels {
		return nil, apiErr(http.StatusBadRequest, "invalid_channel", `"channels" must list 1 to %d channels, not %d`, MaxBroadcastChannels, len(req.Channels))
	}
	seen := make(map[string]struct{}, len(req.Channels))
	for i := range req.Channels {
		if e := a.checkChannel(&req.Channels[i]); e != nil {
			return nil, e
		}
		if _, dup := seen[req.Channels[i]]; dup {
			return nil, apiErr(http.StatusBadRequest, "invalid_channel", "channel %q is listed twice", req.Channels[i])
		}
		seen[req.Channels[i]] = struct{}{}
	}
	data, e := a.checkData(req.Data)
	if e != nil {
		return nil, e
	}
	// All or nothing: every channel is checked before the first is published.
	for _, ch := range req.Channels {
		if e := a.allowed(ch); e != nil {
			return nil, e
		}
	}
	for _, ch := range req.Channels {
		a.n.Publish(ch, data)
	}
	return map[string]any{"ok": true, "channels": len(req.Channels)}, nil
}

// checkPattern validates a glob (path.Match syntax; empty = every channel).
func checkPattern(p string) *APIError {
	if _, err := path.Match(p, ""); err != nil {
		return apiErr(http.StatusBadRequest, "bad_pattern", "pattern %q: %v (glob: * any characters but /, ? one, [a-z] a class, \\ escapes)", p, err)
	}
	return nil
}

func (a *API) localChannels(pattern string) map[string]int {
	all := a.n.LocalChannels()
	if pattern == "" {
		return all
	}
	for ch := range all {
		if ok, _ := path.Match(pattern, ch); !ok {
			delete(all, ch)
		}
	}
	return all
}

func (a *API) channels(r *http.Request) (any, *APIError) {
	pat := r.URL.Query().Get("pattern")
	if e := checkPattern(pat); e != nil {
		return nil, e
	}
	perNode := map[string]map[string]int{a.n.Name(): a.localChannels(pat)}
	var mu sync.Mutex
	results := a.fanout(r.Context(), http.MethodGet, "/local/channels?pattern="+url.QueryEscape(pat), nil, func(node string, body []byte) (int, error) {
		var lc localChannels
		if err := json.Unmarshal(body, &lc); err != nil {
			return 0, err
		}
		mu.Lock()
		perNode[node] = lc.Channels
		mu.Unlock()
		return len(lc.Channels), nil
	})
	results = append([]NodeResult{{Node: a.n.Name(), OK: true, Count: len(perNode[a.n.Name()])}}, results...)
	byCh := map[string]*ChannelInfo{}
	for node, chans := range perNode {
		for ch, c := range chans {
			ci := byCh[ch]
			if ci == nil {
				ci = &ChannelInfo{Channel: ch, Nodes: map[string]int{}}
				byCh[ch] = ci
			}
			ci.Subscribers += c
			ci.Nodes[node] = c
		}
	}
	ans := ChannelsAnswer{Channels: make([]ChannelInfo, 0, len(byCh)), Nodes: results, Complete: complete(results)}
	for _, ci := range byCh {
		ans.Channels = append(ans.Channels, *ci)
	}
	sort.Slice(ans.Channels, func(i, j int) bool { return ans.Channels[i].Channel < ans.Channels[j].Channel })
	return ans, nil
}

func complete(rs []NodeResult) bool {
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return true
}

func (a *API) kick(r *http.Request) (any, *APIError) {
	req, local, e := a.kickHere(r)
	if e != nil {
		return nil, e
	}
	body, _ := json.Marshal(req)
	return a.countAnswer(r.Context(), *req.Channel, local, "/local/kick", body), nil
}

func checkDisconnect(req *disconnectRequest) (string, *APIError) {
	if req.Claim == "" {
		return "", apiErr(http.StatusBadRequest, "bad_request", `"claim" is required (the token claim to match, e.g. "sub")`)
	}
	var v any
	if len(req.Value) == 0 || json.Unmarshal(req.Value, &v) != nil {
		return "", apiErr(http.StatusBadRequest, "bad_request", `"value" is required (a string, number or boolean the claim must equal)`)
	}
	switch v.(type) {
	case string, float64, bool:
	default:
		return "", apiErr(http.StatusBadRequest, "bad_request", `"value" must be a string, number or boolean`)
	}
	if req.Code == 0 {
		req.Code = DefaultDisconnectCode
	}
	if req.Code != 1000 && (req.Code < 3000 || req.Code > 4999) {
		return "", apiErr(http.StatusBadRequest, "bad_request", `"code" must be 1000 or 3000..4999, not %d`, req.Code)
	}
	if len(req.Reason) > 123 {
		return "", apiErr(http.StatusBadRequest, "bad_request", `"reason" is longer than a close frame allows (123 bytes)`)
	}
	return ClaimString(v), nil
}

// kickHere reads a kick request and kicks this node's subscribers: the request (as peers are
// to get it) and this node's result. /local/kick and /api/kick both start here.
func (a *API) kickHere(r *http.Request) (kickRequest, NodeResult, *APIError) {
	var req kickRequest
	if e := a.decode(r, &req); e != nil {
		return req, NodeResult{}, e
	}
	if e := a.checkChannel(req.Channel); e != nil {
		return req, NodeResult{}, e
	}
	return req, NodeResult{Node: a.n.Name(), OK: true, Count: a.n.KickChannel(*req.Channel, req.Message)}, nil
}

// disconnectHere reads a disconnect request (its defaults filled in) and disconnects this
// node's matching connections. /local/disconnect and /api/disconnect both start here.
func (a *API) disconnectHere(r *http.Request) (disconnectRequest, NodeResult, *APIError) {
	var req disconnectRequest
	if e := a.decode(r, &req); e != nil {
		return req, NodeResult{}, e
	}
	value, e := checkDisconnect(&req)
	if e != nil {
		return req, NodeResult{}, e
	}
	return req, NodeResult{Node: a.n.Name(), OK: true, Count: a.n.DisconnectClaim(req.Claim, value, req.Code, req.Reason)}, nil
}

func (a *API) disconnect(r *http.Request) (any, *APIError) {
	req, local, e := a.disconnectHere(r)
	if e != nil {
		return nil, e
	}
	body, _ := json.Marshal(req)
	return a.countAnswer(r.Context(), "", local, "/local/disconnect", body), nil
}

func (a *API) countAnswer(ctx context.Context, channel string, local NodeResult, path string, body []byte) CountAnswer {
	results := a.fanout(ctx, http.MethodPost, path, body, func(_ string, b []byte) (int, error) {
		var nr NodeResult
		err := json.Unmarshal(b, &nr)
		return nr.Count, err
	})
	results = append([]NodeResult{local}, results...)
	ans := CountAnswer{Channel: channel, Nodes: results, Complete: complete(results)}
	for _, r := range results {
		ans.Total += r.Count
	}
	return ans
}

// fanout sends the same request to every other alive node's admin listener, in parallel,
// each bounded by FanoutTimeout. Members without an admin URL (backend members) are
// not asked. Results are sorted by node name.
func (a *API) fanout(ctx context.Context, method, path string, body []byte, parse func(node string, body []byte) (int, error)) []NodeResult {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []NodeResult
	for _, mem := range a.n.Peers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := NodeResult{Node: mem.Name}
			count, err := a.call(ctx, method, mem.Admin+path, body, func(b []byte) (int, error) { return parse(mem.Name, b) })
			if err != nil {
				res.Error = err.Error()
			} else {
				res.OK, res.Count = true, count
			}
			mu.Lock()
			out = append(out, res)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(x, y NodeResult) int { return strings.Compare(x.Node, y.Node) })
	return out
}

func (a *API) call(ctx context.Context, method, u string, body []byte, parse func([]byte) (int, error)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, FanoutTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-API-Key", a.cfg.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct{ Error APIError }
		if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
			return 0, fmt.Errorf("%s: %s", resp.Status, eb.Error.Message)
		}
		return 0, fmt.Errorf("%s", resp.Status)
	}
	return parse(b)
}

// Close drops the idle connections to peers' admin listeners.
func (a *API) Close() { a.client.CloseIdleConnections() }

// ClaimString is how a token claim compares with the value of /api/disconnect: strings as
// they are, numbers in their shortest decimal form, booleans as true/false; objects and
// arrays match nothing.
func ClaimString(v any) string {
	switch c := v.(type) {
	case string:
		return c
	case float64:
		return strconv.FormatFloat(c, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(c)
	case json.Number:
		return c.String()
	}
	return "\x00" + fmt.Sprint(v) // objects and arrays never match
}
