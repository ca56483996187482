package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// collector records what a subscription handler receives.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) handler(_ string, data json.RawMessage) {
	c.mu.Lock()
	c.got = append(c.got, string(data))
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func dial(t *testing.T, urls ...string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URLs: urls, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, AckTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A Go client keeps its subscriptions across a server restart: it reconnects to the same
// address, re-subscribes, and receives again.
func TestGoClientSurvivesServerRestart(t *testing.T) {
	n := harness.NewNode(t, "solo", "--auth-key", "k")
	n.Start()
	sub := dial(t, n.URL())
	var col collector
	ctx := context.Background()
	if err := sub.Subscribe(ctx, "news", col.handler); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, n.URL())
	if err := pub.PublishAck(ctx, "news", "before"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, "first publication", func() error {
		if col.count() < 1 {
			return fmt.Errorf("got %d", col.count())
		}
		return nil
	})
	n.Kill()
	n.Start() // same ports
	i := 0
	harness.Eventually(t, 15*time.Second, "publication after restart", func() error {
		i++
		_ = pub.PublishAck(ctx, "news", fmt.Sprintf("after-%d", i))
		for _, g := range col.snapshot() {
			if strings.HasPrefix(g, `"after-`) {
				return nil
			}
		}
		return fmt.Errorf("nothing after restart yet: %v", col.snapshot())
	})
}

// `sockmesh sub` prints what `sockmesh pub` publishes.
func TestPubSubCommands(t *testing.T) {
	n := harness.NewNode(t, "cli")
	n.Start()
	bin := harness.Binary(t)
	sub := exec.Command(bin, "sub", "--url", n.URL(), "--count", "2", "--timeout", "20s", "alerts")
	var out strings.Builder
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// Publish until the subscriber is listening and has printed two lines.
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	deadline := time.After(20 * time.Second)
	for i := 0; ; i++ {
		if b, err := exec.Command(bin, "pub", "--url", n.URL(), "--ack", "alerts", fmt.Sprintf(`{"n":%d}`, i)).CombinedOutput(); err != nil {
			t.Fatalf("pub: %v\n%s", err, b)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("sub: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "alerts\t{\"n\":") {
				t.Fatalf("sub printed %q", out.String())
			}
			return
		case <-deadline:
			sub.Process.Kill()
			t.Fatalf("sub did not finish; printed %q", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Configuration precedence: flag over environment over file.
func TestEnvironmentConfiguresNode(t *testing.T) {
	n := harness.NewNode(t, "envnode")
	n.Env = []string{"SOCKMESH_PING_TIMEOUT=4321ms", "SOCKMESH_PING_INTERVAL=1s", "SOCKMESH_DEMO=true"}
	n.Start()
	c := dial(t, n.URL())
	if got := c.Status().PingTimeout; got != 4321*time.Millisecond {
		t.Fatalf("pingTimeout from SOCKMESH_PING_TIMEOUT: got %v", got)
	}
	if _, err := c.Invoke(context.Background(), "echo", 1); err != nil {
		t.Fatalf("SOCKMESH_DEMO=true did not install the demo: %v", err)
	}
}

// A --config YAML file sets the same keys as the flags; the command line and the environment
// win over it; an unknown key or a bad value stops the start with an error naming the key.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("ping-timeout: 3s\nping-interval: 500ms\ndemo: true\nmax-subscriptions: 7\n"), 0o600)
	n := harness.NewNode(t, "cfg", "--config", good, "--max-subscriptions", "9")
	n.Start()
	c := dial(t, n.URL())
	if got := c.Status().PingTimeout; got != 3*time.Second {
		t.Fatalf("pingTimeout from the file: %v", got)
	}
	if _, err := c.Invoke(context.Background(), "echo", 1); err != nil {
		t.Fatalf("demo: true in the file did not install the demo: %v", err)
	}
	out, err := exec.Command(harness.Binary(t), "serve", "--config", good, "--max-subscriptions", "9", "--print-config").Output()
	if err != nil || !strings.Contains(string(out), "max-subscriptions: \"9\"") || !strings.Contains(string(out), "ping-timeout: 3s") {
		t.Fatalf("--print-config: %v\n%s", err, out)
	}
	for body, want := range map[string]string{
		"ping-timout: 3s\n":         `unknown key "ping-timout"`,
		"max-subscriptions: many\n": `config key "max-subscriptions"`,
	} {
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte(body), 0o600)
		out, err := exec.Command(harness.Binary(t), "serve", "--config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("config %q: err %v, output %q, want it to mention %s", body, err, out, want)
		}
	}
}
