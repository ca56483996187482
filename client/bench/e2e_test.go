package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/node"
)

// startNode starts a real sockmesh node in this process (mods change its configuration).
func startNode(t *testing.T, mods ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{WSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", Name: "b", DrainDuration: time.Millisecond}
	for _, m := range mods {
		m(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

func runOne(t *testing.T, cfg Config) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var streamed int
	cfg.OnResult = func(Result) { streamed++ }
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) == 0 || streamed != len(res) {
		t.Fatalf("%d results, %d streamed", len(res), streamed)
	}
	return res
}

// checkTraffic asserts zero loss and sane (not fast: no performance
// assertions) numbers for a traffic result.
func checkTraffic(t *testing.T, r Result, perPub int64) {
	t.Helper()
	if r.Published == 0 || r.Expected != r.Published*perPub {
		t.Fatalf("published %d, expected %d (want %d per publication)", r.Published, r.Expected, perPub)
	}
	if r.Delivered != r.Expected || r.Lost != 0 || r.LossPct != 0 || r.Gaps != 0 || r.OutOfOrder != 0 || r.Disconnects != 0 {
		t.Fatalf("loss: %+v", r)
	}
	if r.DeliveredPerSec <= 0 || r.PublishRate <= 0 || r.DurationSec <= 0 {
		t.Fatalf("rates: %+v", r)
	}
	if !(r.LatP50Ms > 0 && r.LatP50Ms <= r.LatP90Ms && r.LatP90Ms <= r.LatP99Ms && r.LatP99Ms <= r.LatMaxMs) {
		t.Fatalf("latency percentiles out of order: %+v", r)
	}
	if r.ServerCPU <= 0 || r.ServerRSSMiB <= 0 || r.ToolCPUs < 1 {
		t.Fatalf("process stats: %+v", r)
	}
}

func TestFanoutAgainstNodeLosesNothing(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	res := runOne(t, Config{URLs: []string{n.WSURL()}, Scenario: "fanout", Subscribers: 20, Publishers: 2,
		Rate: 200, Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, ServerPIDs: []int{os.Getpid()}, Label: "t"})
	r := res[0]
	if r.Scenario != "fanout" || r.Subscribers != 20 || r.Publishers != 2 || r.Connections != 22 || r.Label != "t" || r.Ack {
		t.Fatalf("description: %+v", r)
	}
	checkTraffic(t, r, 20)
}

func TestChannelsAgainstNodeLosesNothingAndAcks(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	res := runOne(t, Config{URLs: []string{n.WSURL()}, Scenario: "channels", Connections: 50, Publishers: 2,
		Rate: 400, Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond, ServerPIDs: []int{os.Getpid()}})
	r := res[0]
	if r.Channels != 50 || !r.Ack {
		t.Fatalf("description: %+v", r)
	}
	checkTraffic(t, r, 1)
	if r.Acked != r.Published || r.AckErrors != 0 || r.AckP50Ms <= 0 || r.AckP99Ms < r.AckP50Ms {
		t.Fatalf("acks: %+v", r)
	}
}

func TestMaxIdleConnectAgainstNode(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	url := []string{n.WSURL()}
	res := runOne(t, Config{URLs: url, Scenario: "max", Subscribers: 5, Publishers: 1, Rate: 50,
		StepDuration: 200 * time.Millisecond, MaxSteps: 2, MaxP99: time.Hour})
	if len(res) != 3 || !res[2].Summary || res[2].MaxDeliveredPerSec <= 0 || res[1].TargetRate != 75 {
		t.Fatalf("max: %+v", res)
	}
	for _, r := range res[:2] {
		if r.Lost != 0 || r.Delivered == 0 {
			t.Fatalf("max step: %+v", r)
		}
	}
	res = runOne(t, Config{URLs: url, Scenario: "idle", Connections: 30, Channels: 2, Duration: 100 * time.Millisecond,
		ServerPIDs: []int{os.Getpid()}})
	if r := res[0]; r.Connections != 30 || r.Channels != 60 || r.ConnectErrors != 0 || r.ServerRSSMiB <= 0 {
		t.Fatalf("idle: %+v", r)
	}
	for _, connector := range []string{"gorilla", ""} {
		res = runOne(t, Config{URLs: url, Scenario: "connect", Connections: 40, Concurrency: 8, Connector: connector})
		if r := res[0]; r.Connections != 40 || r.ConnectErrors != 0 || r.ConnectsPerSec <= 0 || r.LatP50Ms <= 0 || r.Connector == "" ||
			connector != "" && r.Connector != connector {
			t.Fatalf("connect: %+v", r)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{URLs: []string{"ws://x"}, Scenario: "nope"},
		{URLs: []string{"ws://x"}, Scenario: "cross"},
		{URLs: []string{"ws://x"}, Scenario: "max", MaxOf: "idle"},
		{URLs: []string{"ws://x"}, Scenario: "connect", Connector: "nope"},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// Fan-out over several channels: subscriber i on channel i % K, each publication reaching a
// K-th of them, nothing lost (the subscribers are rounded down to a multiple of K).
func TestFanoutOverChannelsLosesNothing(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	res := runOne(t, Config{URLs: []string{n.WSURL()}, Scenario: "fanout", Subscribers: 42, FanoutChannels: 4, Publishers: 2,
		Rate: 200, Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, ServerPIDs: []int{os.Getpid()}})
	r := res[0]
	if r.Subscribers != 40 || r.Channels != 4 {
		t.Fatalf("%d subscribers on %d channels, want 40 on 4", r.Subscribers, r.Channels)
	}
	checkTraffic(t, r, 10)
}
