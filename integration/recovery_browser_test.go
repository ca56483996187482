package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// recoveryPage runs in headless Chromium with the browser build of socketcluster-client 20
// and the unmodified helper, both served by the test. It drives the scenario and hands each
// step to the Go side with POST /step/<name> (the answer comes once the Go side has done its
// part: published, or waited for the mesh), and ends with POST /step/result carrying what
// the clients received, or the error that stopped it. Timers run in real time: the page
// waits for real WebSocket traffic, which a virtual-time budget does not wait for.
const recoveryPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>sockmesh recovery helper</title></head>
<body><pre id="result">running</pre>
<script type="module">
const params = new URLSearchParams(location.search);
const port = Number(params.get('port'));
const FAST_RECONNECT = { initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(cond, ms, what) {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('timed out after ' + ms + ' ms waiting for ' + what);
    await sleep(10);
  }
}

async function step(name, body) {
  const res = await fetch('/step/' + name, { method: 'POST', body: JSON.stringify(body || {}) });
  if (!res.ok) throw new Error('step ' + name + ': ' + res.status + ' ' + (await res.text()));
}

const result = {};
const clients = {}; // what each client has so far, reported with an error
try {
  const { create } = await import('/socketcluster-client.min.js');
  const { withRecovery } = await import('/sockmesh-recovery.js');

  // A client on n1 subscribed to channel, through the helper (recovering) or not (control).
  function client(channel, recovering) {
    const socket = create({ hostname: '127.0.0.1', port, autoReconnectOptions: { ...FAST_RECONNECT }, ackTimeout: 5000 });
    const rec = recovering ? withRecovery(socket) : null;
    const c = { socket, rec, got: [], answers: [], subscribes: 0 };
    clients[channel + (recovering ? '' : ' (control)')] = c;
    const ch = recovering ? rec.subscribe(channel) : socket.subscribe(channel);
    (async () => { for await (const d of ch) c.got.push(d); })();
    (async () => { for await (const a of socket.receiver('sockmesh:recovery')) c.answers.push(a); })();
    (async () => { for await (const e of socket.listener('subscribe')) if (e.channel === channel) c.subscribes++; })();
    return c;
  }

  // Complete recovery: a (helper) and b (control, plain subscribe) lose their connection
  // while 6..9 are published; a gets them back, b does not.
  {
    const a = client('rc.feed', true), b = client('rc.feed', false);
    await waitFor(() => a.subscribes === 1 && b.subscribes === 1, 10000, 'rc.feed subscribed');
    await step('feed-subscribed');
    await waitFor(() => a.got.length >= 5 && b.got.length >= 5, 10000, 'publications 1..5');
    result.feedPositionBefore = a.rec.position('rc.feed');
    a.socket.disconnect();
    b.socket.disconnect();
    await step('feed-away');
    a.socket.connect();
    b.socket.connect();
    await waitFor(() => a.subscribes === 2 && b.subscribes === 2, 10000, 'rc.feed resubscribed');
    await waitFor(() => a.answers.length >= 1, 10000, 'the recovery answer');
    await step('feed-resubscribed');
    await waitFor(() => a.got.length >= 12 && b.got.length >= 8, 10000, 'publications 10..12');
    await sleep(300); // anything repeated would arrive now
    result.feed = a.got;
    result.feedAnswers = a.answers;
    result.feedPositionAfter = a.rec.position('rc.feed');
    result.control = b.got;
    result.controlAnswers = b.answers;
    a.socket.disconnect();
    b.socket.disconnect();
  }

  // Past the retention bound (5 kept): 2..8 missed, 4..8 still kept.
  {
    const c = client('rc.bound', true);
    await waitFor(() => c.subscribes === 1, 10000, 'rc.bound subscribed');
    await step('bound-subscribed');
    await waitFor(() => c.got.length >= 1, 10000, 'publication 1');
    c.socket.disconnect();
    await step('bound-away');
    c.socket.connect();
    await waitFor(() => c.subscribes === 2 && c.answers.length >= 1, 10000, 'rc.bound resubscribed and answered');
    await step('bound-resubscribed');
    await waitFor(() => c.got.includes(9), 10000, 'publication 9');
    await sleep(300);
    result.bound = c.got;
    result.boundAnswers = c.answers;
    c.socket.disconnect();
  }
} catch (err) {
  result.error = String(err && err.stack || err);
  result.clients = Object.fromEntries(Object.entries(clients).map(
    ([name, c]) => [name, { got: c.got, answers: c.answers, subscribes: c.subscribes }]));
}
document.getElementById('result').textContent = JSON.stringify(result);
await fetch('/step/result', { method: 'POST', body: JSON.stringify(result) });
</script>
</body></html>
`

type pageStep struct {
	name  string
	body  []byte
	reply chan error // nil: the Go side did its part
}

type recoveryPageResult struct {
	Error              string           `json:"error"`
	Feed               []int            `json:"feed"`
	FeedAnswers        []map[string]any `json:"feedAnswers"`
	FeedPositionBefore *jsPosition      `json:"feedPositionBefore"`
	FeedPositionAfter  *jsPosition      `json:"feedPositionAfter"`
	Control            []int            `json:"control"`
	ControlAnswers     []map[string]any `json:"controlAnswers"`
	Bound              []int            `json:"bound"`
	BoundAnswers       []map[string]any `json:"boundAnswers"`
}

type jsPosition struct {
	Seqs map[string]uint64 `json:"seqs"`
	Time int64             `json:"time"`
}

// TestRecoveryHelperInChromium: clients/js/sockmesh-recovery.js with the real
// socketcluster-client 20 (its browser build) in headless Chromium, against a 2-node cluster.
// The page's socket on n1 subscribes through the helper, receives 1..5 published on n2 (the
// positions come through the mesh), disconnects, reconnects after 6..9 were published, and
// must get 6..9 once and in order before 10..12 (published once it is resubscribed), with the
// answer recovered: true, missed: 4. A control socket beside it subscribes without the helper
// and must miss 6..9 with no answer: that is what the helper's socket would get if the helper
// did not put the position into the subscription's data (its resubscribe would carry {}), so
// the test fails without the helper doing its job. Past the retention bound the answer says
// recovered: false with the reason, and what is still kept is replayed.
func TestRecoveryHelperInChromium(t *testing.T) {
	bin := chromium(t)
	jsdir := ensureJSClient(t)
	bundle := filepath.Join(jsdir, "node_modules", "socketcluster-client", "socketcluster-client.min.js")
	if _, err := os.Stat(bundle); err != nil {
		t.Skipf("no browser build of socketcluster-client (%v): npm ci in integration/jsclient", err)
	}
	helper, err := filepath.Abs(filepath.Join("..", "clients", "js", "sockmesh-recovery.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(helper); err != nil {
		t.Fatal(err)
	}

	// 5 kept per channel: rc.feed's 6..9 (4 missed) are all kept, beside 5, the page's
	// position; rc.bound's 2..8 (7 missed) are not, only 4..8.
	nodes := startCluster(t, 2, "--recover-channels", "rc.*", "--recover-messages", "5")
	n1, n2 := nodes[0], nodes[1]
	// A keeper on n1 keeps n1 receiving both channels while the page is away (so n1's rings
	// hold what the page missed, whether or not n1 could fetch it from a peer), and tells
	// when n1 has received a publication.
	keep := map[string]*collector{"rc.feed": {}, "rc.bound": {}}
	keeper := dial(t, n1.URL())
	for ch, c := range keep {
		if err := keeper.Subscribe(context.Background(), ch, c.handler); err != nil {
			t.Fatal(err)
		}
	}
	waitWanted(t, nodes, n1.Name, len(keep))
	pub := dial(t, n2.URL())
	publish := func(ch string, from, to int) error {
		for i := from; i <= to; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := pub.PublishAck(ctx, ch, i)
			cancel()
			if err != nil {
				return fmt.Errorf("publish %d on %s: %w", i, ch, err)
			}
		}
		return nil
	}
	// n1 has received publication n of ch (so it is in n1's ring before the page returns).
	received := func(ch string, n int) error {
		return harness.Poll(10*time.Second, func() error {
			if got := keep[ch].count(); got < n {
				return fmt.Errorf("n1 has received %d publications on %s, want %d", got, ch, n)
			}
			return nil
		})
	}

	// The page's server, loopback only (httptest listens on 127.0.0.1).
	done := make(chan struct{})
	steps := make(chan pageStep)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /recovery.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, recoveryPage)
	})
	serveJS := func(path string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, err := os.ReadFile(path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Write(b)
		}
	}
	mux.HandleFunc("GET /sockmesh-recovery.js", serveJS(helper))
	mux.HandleFunc("GET /socketcluster-client.min.js", serveJS(bundle))
	mux.HandleFunc("POST /step/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s := pageStep{name: r.PathValue("name"), body: body, reply: make(chan error, 1)}
		select {
		case steps <- s:
		case <-r.Context().Done():
			return
		case <-done:
			http.Error(w, "the test is over", http.StatusServiceUnavailable)
			return
		}
		select {
		case err := <-s.reply:
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		case <-done:
			http.Error(w, "the test is over", http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	_, wsPort, _ := net.SplitHostPort(n1.WSAddr)
	stderr := startHeadless(t, bin, srv.URL+"/recovery.html?port="+wsPort)
	t.Cleanup(func() { close(done) }) // before the browser is killed and the server closed

	// next waits for the page's next step, which must be want.
	next := func(want string, within time.Duration) pageStep {
		t.Helper()
		select {
		case s := <-steps:
			if s.name != want {
				if s.name == "result" {
					t.Fatalf("page ended before step %q: %s", want, s.body)
				}
				t.Fatalf("page step %q, want %q", s.name, want)
			}
			return s
		case <-time.After(within):
			t.Fatalf("no step %q from the page within %s; chromium said:\n%s", want, within, tail([]byte(stderr.String()), 3000))
		}
		return pageStep{}
	}
	do := func(want string, action func() error) {
		t.Helper()
		s := next(want, 30*time.Second)
		err := action()
		s.reply <- err
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
	}

	do("feed-subscribed", func() error { return publish("rc.feed", 1, 5) })
	do("feed-away", func() error {
		if err := publish("rc.feed", 6, 9); err != nil {
			return err
		}
		return received("rc.feed", 9)
	})
	do("feed-resubscribed", func() error { return publish("rc.feed", 10, 12) })
	do("bound-subscribed", func() error { return publish("rc.bound", 1, 1) })
	do("bound-away", func() error {
		if err := publish("rc.bound", 2, 8); err != nil {
			return err
		}
		return received("rc.bound", 8)
	})
	do("bound-resubscribed", func() error { return publish("rc.bound", 9, 9) })
	s := next("result", 30*time.Second)
	s.reply <- nil

	var res recoveryPageResult
	if err := json.Unmarshal(s.body, &res); err != nil {
		t.Fatalf("page result %s: %v", s.body, err)
	}
	if res.Error != "" {
		t.Fatalf("page failed: %s", s.body)
	}
	t.Logf("page result: %s", s.body)

	seq := func(ranges ...[2]int) []int {
		var out []int
		for _, r := range ranges {
			for i := r[0]; i <= r[1]; i++ {
				out = append(out, i)
			}
		}
		return out
	}
	if want := seq([2]int{1, 12}); !reflect.DeepEqual(res.Feed, want) {
		t.Errorf("through the helper: received %v, want %v (6..9 once, in order, before 10..12)", res.Feed, want)
	}
	wantAnswer := []map[string]any{{"channel": "rc.feed", "recovered": true, "missed": float64(4)}}
	if !reflect.DeepEqual(res.FeedAnswers, wantAnswer) {
		t.Errorf("through the helper: answers %v, want %v", res.FeedAnswers, wantAnswer)
	}
	// The helper's position: one origin (n2's incarnation), at the last publication received.
	checkPos := func(what string, p *jsPosition, seq uint64) {
		t.Helper()
		if p == nil || len(p.Seqs) != 1 || p.Time <= 0 {
			t.Errorf("%s: position %+v, want one origin and a time", what, p)
			return
		}
		for o, s := range p.Seqs {
			if !strings.HasPrefix(o, n2.Name) || s != seq {
				t.Errorf("%s: position %v, want %s's incarnation at %d", what, p.Seqs, n2.Name, seq)
			}
		}
	}
	checkPos("before the disconnect", res.FeedPositionBefore, 5)
	checkPos("at the end", res.FeedPositionAfter, 12)
	// The control: what the page gets when the position does not ride on the resubscribe.
	if want := seq([2]int{1, 5}, [2]int{10, 12}); !reflect.DeepEqual(res.Control, want) {
		t.Errorf("without the helper: received %v, want %v (the scenario must lose 6..9)", res.Control, want)
	}
	if len(res.ControlAnswers) != 0 {
		t.Errorf("without the helper: answers %v, want none", res.ControlAnswers)
	}

	// 2..8 missed, 5 kept (4..8): those are replayed, and the answer says incomplete.
	if want := seq([2]int{1, 1}, [2]int{4, 9}); !reflect.DeepEqual(res.Bound, want) {
		t.Errorf("past the bound: received %v, want %v", res.Bound, want)
	}
	if len(res.BoundAnswers) != 1 {
		t.Fatalf("past the bound: answers %v, want one", res.BoundAnswers)
	}
	a := res.BoundAnswers[0]
	if a["channel"] != "rc.bound" || a["recovered"] != false || a["missed"] != float64(5) {
		t.Errorf("past the bound: answer %v, want channel rc.bound, recovered false, missed 5", a)
	}
	if r, _ := a["reason"].(string); !strings.Contains(r, "retention bound") {
		t.Errorf("past the bound: reason %q, want the retention bound", r)
	}
}

// startHeadless runs Chromium on url in real time (no virtual-time budget, no --dump-dom: it
// keeps running until the test ends and kills it with its whole process group) and returns
// its output.
func startHeadless(t *testing.T, bin, url string) *syncBuffer {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-background-timer-throttling",
		"--disable-renderer-backgrounding", "--enable-logging=stderr", "--v=0",
		"--user-data-dir=" + t.TempDir(), url,
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("chromium (process group %d) did not exit within 10s of SIGKILL", cmd.Process.Pid)
		}
	})
	return out
}
