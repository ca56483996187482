package scale

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client/bench"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// ConnectionsResult is what one node with many connections measured.
type ConnectionsResult struct {
	Machine Machine `json:"machine"`
	// Requested is the connection count asked for; OpenFileLimit the hard limit of open files
	// a process may have here, which caps it (one descriptor per connection in the node and
	// in the load generator).
	Requested     int            `json:"requested"`
	OpenFileLimit uint64         `json:"open_file_limit"`
	Hold          []bench.Result `json:"hold"`    // idle connections held, one publication to all
	Traffic       []bench.Result `json:"traffic"` // publications to channels of many subscribers
}

// raiseNoFile lifts this process's open-file limit (inherited by the node and the load
// generator it starts), instead of the host's, as far as it may go: to want, or to the hard
// limit where raising that is not permitted (a container without CAP_SYS_RESOURCE). It
// returns the limit in force.
func raiseNoFile(t *testing.T, want uint64) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= want {
		return lim.Cur
	}
	try := lim
	try.Cur, try.Max = want, max(lim.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try); err == nil {
		return want
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Logf("open-file limit: %d wanted, the hard limit %d is all this process may have", want, lim.Max)
	return lim.Max
}

// runBench runs `sockmesh bench` with args and returns its JSON results.
func runBench(t *testing.T, timeout time.Duration, args ...string) []bench.Result {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), append([]string{"bench", "-q", "--json"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sockmesh bench %v: %v\n%s", args, err, errb.Bytes())
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("sockmesh bench %v: still running after %v\n%s", args, timeout, errb.Bytes())
	}
	var res []bench.Result
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r bench.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
			res = append(res, r)
		}
	}
	if len(res) == 0 {
		t.Fatalf("sockmesh bench %v: no result\n%s", args, errb.Bytes())
	}
	return res
}

// TestConnections: 100,000 idle connections on one node (SCALE_CONNECTIONS), held for 60 s
// with every ping answered and one publication to all of them; then the same number of
// connections on 1,000 channels with publications at 10,000/s.
func TestConnections(t *testing.T) {
	enabled(t)
	conns := 100000
	if v := intsFromEnv("SCALE_CONNECTIONS", nil); len(v) > 0 {
		conns = v[0]
	}
	limit := raiseNoFile(t, uint64(conns)+10000)
	out := ConnectionsResult{Machine: machine(), Requested: conns, OpenFileLimit: limit}
	if uint64(conns)+200 > limit {
		conns = int(limit) - 200
		t.Logf("measuring %d connections instead of %d: each process may hold %d files here", conns, out.Requested, limit)
	}
	nd := harness.NewNode(t, "c1", "--log-level", "warn", "--max-connections-per-ip", "-1", "--handshake-rate", "-1", "--handshake-rate-per-ip", "-1",
		"--max-connections", "-1", "--publish-rate", "-1")
	nd.Start()
	pid := strconv.Itoa(nd.Pid())

	hold := runBench(t, 10*time.Minute, "--scenario", "hold", "--url", nd.URL(), "--server-pid", pid,
		"--connections", strconv.Itoa(conns), "--duration", holdFor())
	out.Hold = hold
	h := hold[len(hold)-1]
	t.Logf("%d connections: %.0f/s opened, %d errors, %.2f KiB per connection, RSS %.0f -> %.0f MiB; one publication to all: first %.1f ms, all %.1f ms, server CPU %.1f ms",
		h.Connections, h.ConnectsPerSec, h.ConnectErrors, h.MemPerConnKiB, h.ServerRSSBeforeMiB, h.ServerRSSMiB, h.FanoutFirstMs, h.FanoutAllMs, h.FanoutServerCPUMs)
	if h.ConnectErrors != 0 || h.NotAttempted != 0 || h.HoldDisconnects == nil || *h.HoldDisconnects != 0 {
		t.Errorf("holding %d connections: %d connect errors, %d not attempted, disconnects %v", conns, h.ConnectErrors, h.NotAttempted, h.HoldDisconnects)
	}
	if h.FanoutDelivered == nil || *h.FanoutDelivered != int64(conns) {
		t.Errorf("one publication to %d connections: delivered %v", conns, h.FanoutDelivered)
	}

	// 100 subscribers per channel; the load is 10 deliveries per second per
	// connection (10,000 publications/s to 1,000 channels of 100 at 100,000 connections).
	// Each connection gets its own write per publication at that rate (nothing to batch), so
	// the node is syscall-bound long before its fan-out peak: a ramp from 1 delivery/s per
	// connection, doubling, finds where it stops keeping up (p99 over 100 ms, or loss).
	subs := (conns - 100) / 100 * 100
	chans := subs / 100
	traffic := runBench(t, 8*time.Minute, "--scenario", "max", "--of", "fanout", "--url", nd.URL(), "--server-pid", pid,
		"--subscribers", strconv.Itoa(subs), "--fanout-channels", strconv.Itoa(chans), "--rate", strconv.Itoa(chans),
		"--step-factor", "2", "--step", "6s", "--warmup", "3s", "--max-steps", "5")
	out.Traffic = traffic
	for _, r := range traffic {
		if r.Summary {
			t.Logf("best: %.0f delivered/s", r.MaxDeliveredPerSec)
			continue
		}
		t.Logf("%d subscribers on %d channels, %.0f publications/s (%.1f per connection per second): %.0f delivered/s, lost %d, p50 %.1f ms, p99 %.1f ms, server CPU %.0f %%",
			r.Subscribers, r.Channels, r.PublishRate, r.PublishRate/float64(chans), r.DeliveredPerSec, r.Lost, r.LatP50Ms, r.LatP99Ms, r.ServerCPU)
	}
	if first := traffic[0]; first.Lost != 0 || first.Disconnects != 0 {
		t.Errorf("1 delivery/s per connection: lost %d, disconnects %d", first.Lost, first.Disconnects)
	}
	writeJSON(t, "connections.json", out)
	if nd.Exited() {
		t.Fatalf("the node exited: %s", nd.Log())
	}
}

// holdFor is how long the connections are held: SCALE_HOLD, or the 60 s the goal names.
func holdFor() string {
	if d, err := time.ParseDuration(os.Getenv("SCALE_HOLD")); err == nil && d > 0 {
		return d.String()
	}
	return "60s"
}
