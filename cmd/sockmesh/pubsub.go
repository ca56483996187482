package main

// `sockmesh pub` and `sockmesh sub`: a quick look at a channel from a
// terminal, through the Go client in client/.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sockmesh/sockmesh/client"
)

const defaultURL = "ws://127.0.0.1:8000/socketcluster/"

// runPub implements `sockmesh pub [flags] CHANNEL [DATA]`.
func runPub(args []string) error {
	return pubMain(context.Background(), args, os.Stdin, os.Stderr)
}

// runSub implements `sockmesh sub [flags] CHANNEL...`.
func runSub(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return subMain(ctx, args, os.Stdout, os.Stderr)
}

// commonFlags are the flags pub and sub share.
type commonFlags struct {
	urls    string
	token   string
	verbose bool
}

func (cf *commonFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("SOCKMESH_URL")
	if def == "" {
		def = defaultURL
	}
	fs.StringVar(&cf.urls, "url", def, "comma-separated node URLs, tried in turn (env SOCKMESH_URL)")
	fs.StringVar(&cf.token, "token", "", "auth token (JWT) to present in the handshake")
	fs.BoolVar(&cf.verbose, "v", false, "log connection events to stderr")
}

func (cf *commonFlags) options(stderr io.Writer) (client.Options, error) {
	var urls []string
	for _, u := range strings.Split(cf.urls, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		nu, err := normalizeURL(u)
		if err != nil {
			return client.Options{}, err
		}
		urls = append(urls, nu)
	}
	if len(urls) == 0 {
		return client.Options{}, errors.New("no --url given")
	}
	level := slog.LevelWarn
	if cf.verbose {
		level = slog.LevelInfo
	}
	return client.Options{
		URLs:      urls,
		AuthToken: cf.token,
		Logger:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}, nil
}

// normalizeURL accepts host:port, ws(s)://host:port and full URLs; a missing
// scheme becomes ws:// and a missing path /socketcluster/.
func normalizeURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "ws://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("bad --url %q: %w", s, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("bad --url %q: scheme must be ws or wss", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("bad --url %q: no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/socketcluster/"
	}
	return u.String(), nil
}

// parseInterspersed parses flags that may come before or after the
// positional arguments ("--" ends flag parsing).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseData returns s as JSON when it is valid JSON, else as a string.
func parseData(s string) any {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	return s
}

func pubMain(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf commonFlags
	cf.register(fs)
	ack := fs.Bool("ack", false, "publish with acknowledgement (#publish invoke) and report server errors")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit to connect, and for each acknowledgement")
	apiURL := fs.String("api", os.Getenv("SOCKMESH_API_URL"), "publish through a node's HTTP API at this base URL (http://host:port) instead of a WebSocket (env SOCKMESH_API_URL)")
	apiKey := fs.String("api-key", os.Getenv("SOCKMESH_API_KEY"), "API key for --api (env SOCKMESH_API_KEY)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sockmesh pub [--url URL[,URL2]] [--ack] [--token T] CHANNEL [DATA]")
		fmt.Fprintln(stderr, "       sockmesh pub --api URL [--api-key K] CHANNEL [DATA]")
		fmt.Fprintln(stderr, "DATA is sent as JSON if it parses as JSON, else as a string;")
		fmt.Fprintln(stderr, "without DATA, each line of stdin is one publication.")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		fs.Usage()
		return errors.New("pub: want CHANNEL [DATA]")
	}
	channel := pos[0]
	if *apiURL != "" {
		return pubAPI(ctx, *apiURL, *apiKey, *timeout, channel, pos[1:], stdin)
	}
	opts, err := cf.options(stderr)
	if err != nil {
		return err
	}
	opts.AckTimeout = *timeout

	dctx, cancel := context.WithTimeout(ctx, *timeout)
	c, err := client.Dial(dctx, opts)
	cancel()
	if err != nil {
		return fmt.Errorf("pub: connect: %w", err)
	}
	defer c.Close()

	publish := func(data any) error {
		if *ack {
			return c.PublishAck(ctx, channel, data)
		}
		err := c.Publish(channel, data)
		if errors.Is(err, client.ErrNotConnected) || client.IsBadConnection(err) {
			// Reconnecting: wait for the connection and try once more.
			wctx, cancel := context.WithTimeout(ctx, *timeout)
			err = c.WaitConnected(wctx)
			cancel()
			if err == nil {
				err = c.Publish(channel, data)
			}
		}
		return err
	}

	return publishAll(pos[1:], stdin, publish)
}

func subMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf commonFlags
	cf.register(fs)
	count := fs.Int("count", 0, "exit after this many publications (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "give up after this long; an error when --count was not reached (0: no limit)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sockmesh sub [--url URL[,URL2]] [--token T] [--count N] [--timeout D] CHANNEL...")
		fmt.Fprintln(stderr, "prints one line per publication: channel<TAB>data (data as compact JSON)")
		fs.PrintDefaults()
	}
	channels, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(channels) == 0 {
		fs.Usage()
		return errors.New("sub: want at least one CHANNEL")
	}
	if *count < 0 {
		return errors.New("sub: --count must be >= 0")
	}
	opts, err := cf.options(stderr)
	if err != nil {
		return err
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	opts.OnSubscribeFail = func(ch string, err error) {
		fmt.Fprintf(stderr, "sockmesh sub: re-subscribing to %s failed: %v\n", ch, err)
	}
	opts.OnKickOut = func(ch, msg string) {
		fmt.Fprintf(stderr, "sockmesh sub: kicked out of %s: %s\n", ch, msg)
	}

	connectCtx := ctx
	if *timeout == 0 {
		var cancel context.CancelFunc
		connectCtx, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	}
	c, err := client.Dial(connectCtx, opts)
	if err != nil {
		return fmt.Errorf("sub: connect: %w", err)
	}
	defer c.Close()

	var (
		mu       sync.Mutex
		received int
		line     bytes.Buffer
		done     = make(chan struct{})
		werr     error
	)
	handler := func(ch string, data json.RawMessage) {
		mu.Lock()
		defer mu.Unlock()
		if werr != nil || (*count > 0 && received >= *count) {
			return
		}
		line.Reset()
		line.WriteString(ch)
		line.WriteByte('\t')
		if json.Compact(&line, data) != nil {
			line.Write(data)
		}
		line.WriteByte('\n')
		if _, err := stdout.Write(line.Bytes()); err != nil {
			werr = err
			close(done)
			return
		}
		received++
		if *count > 0 && received == *count {
			close(done)
		}
	}
	for _, ch := range channels {
		if err := c.Subscribe(ctx, ch, handler); err != nil {
			return fmt.Errorf("sub: subscribe %s: %w", ch, err)
		}
	}
	fmt.Fprintf(stderr, "sockmesh sub: subscribed to %s\n", strings.Join(channels, ", "))

	select {
	case <-done:
		mu.Lock()
		defer mu.Unlock()
		return werr
	case <-ctx.Done():
	}
	mu.Lock()
	n := received
	mu.Unlock()
	if *count > 0 && n < *count {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("sub: timed out after %v with %d of %d publications", *timeout, n, *count)
		}
		return fmt.Errorf("sub: interrupted with %d of %d publications", n, *count)
	}
	return nil
}

// pubAPI publishes through a node's HTTP API: POST {api}/api/publish, one request per
// publication (DATA, or each line of stdin).
func pubAPI(ctx context.Context, api, key string, timeout time.Duration, channel string, data []string, stdin io.Reader) error {
	if !strings.Contains(api, "://") {
		api = "http://" + api
	}
	u, err := url.Parse(api)
	if err != nil || u.Host == "" {
		return fmt.Errorf("pub: --api %q is not a URL (http://host:port)", api)
	}
	endpoint := strings.TrimSuffix(u.String(), "/") + "/api/publish"
	hc := &http.Client{Timeout: timeout}
	publish := func(d any) error {
		body, err := json.Marshal(map[string]any{"channel": channel, "data": d})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
				return fmt.Errorf("%s: %s: %s", resp.Status, e.Error.Code, e.Error.Message)
			}
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	return publishAll(data, stdin, publish)
}

// publishAll publishes the one DATA argument, or else each non-empty line of stdin, through
// publish: the same for the WebSocket and the HTTP API paths of `sockmesh pub`.
func publishAll(args []string, stdin io.Reader, publish func(any) error) error {
	if len(args) == 1 {
		if err := publish(parseData(args[0])); err != nil {
			return fmt.Errorf("pub: %w", err)
		}
		return nil
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	n := 0
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		n++
		if err := publish(parseData(line)); err != nil {
			return fmt.Errorf("pub: line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pub: reading stdin: %w", err)
	}
	return nil
}
