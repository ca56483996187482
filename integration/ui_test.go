package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/integration/harness"
)

// chromium returns Debian's chromium, installing it when it is missing and the test runs as
// root with apt-get; otherwise the test is skipped with the reason.
func chromium(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		t.Skip("chromium is not installed and cannot be installed here (needs root and apt-get): apt-get install -y chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := func() ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "chromium")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		// A fresh machine may have no package lists yet.
		_ = exec.CommandContext(ctx, "apt-get", "update", "-qq").Run()
		if out, err := install(); err != nil {
			t.Skipf("chromium is not installed and apt-get install -y chromium failed: %v\n%s", err, tail(out, 2000))
		}
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("apt-get installed chromium but it is not on PATH")
	}
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// headless runs chromium on url with extra flags and returns its stdout.
func headless(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000",
	}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, tail(stderr.Bytes(), 3000))
	}
	return stdout.Bytes()
}

// The status page on one node's admin address draws every node and every link of a 3-node
// cluster (reading the other nodes' admin endpoints from the browser), with live rates.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	// Each node lets the others' status pages read it (its admin origin allow-list); every
	// admin listener wants the token, which the page gets once, in the link.
	nodes := make([]*harness.Node, 3)
	var origins []string
	for i := range nodes {
		nodes[i] = harness.NewNode(t, fmt.Sprintf("n%d", i+1))
		origins = append(origins, nodes[i].AdminURL())
	}
	for i, n := range nodes {
		n.Args = append(n.Args, "--admin-allow-origins", strings.Join(origins, ","))
		if i > 0 {
			n.Args = append(n.Args, "--join", nodes[0].GossipAddr)
		}
		n.Start()
	}
	waitConverged(t, nodes)

	// Some traffic, so that rates and charts show something: a subscriber on every node, a
	// publisher on n1 at about 50/s for the rest of the test.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range nodes {
		if err := dial(t, n.URL()).Subscribe(ctx, "ui.demo", func(string, json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		waitWanted(t, nodes, n.Name, 1)
	}
	pub := dial(t, nodes[0].URL())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				_ = pub.Publish("ui.demo", pubMsg{P: "ui", S: i})
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	// Without the token the page is refused, and tells nothing.
	if dom := string(headless(t, bin, nodes[1].AdminURL()+"/ui", "--dump-dom")); strings.Contains(dom, "data-node=") || !strings.Contains(dom, `"code":"unauthorized"`) {
		t.Fatalf("the status page without the token:\n%s", tail([]byte(dom), 2000))
	}
	url := nodes[1].AdminURL() + "/ui?token=" + nodes[1].AdminToken
	dom := string(headless(t, bin, url, "--dump-dom"))
	for _, n := range nodes {
		if !regexp.MustCompile(`data-node="` + n.Name + `" data-status="alive"`).MatchString(dom) {
			t.Errorf("node %s is not drawn as alive", n.Name)
		}
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			link := fmt.Sprintf(`data-link="%s|%s" data-state="up"`, nodes[i].Name, nodes[j].Name)
			if !regexp.MustCompile(regexp.QuoteMeta(link)).MatchString(dom) {
				t.Errorf("link %s|%s is not drawn as up", nodes[i].Name, nodes[j].Name)
			}
		}
	}
	if n := len(regexp.MustCompile(`data-link="`).FindAllString(dom, -1)); n != 3 {
		t.Errorf("%d links drawn, want 3", n)
	}
	// Rates are computed from successive polls; under headless Chromium's virtual time the
	// intervals are not real, so only their presence is checked.
	if !regexp.MustCompile(`n1→n2 [0-9.]+/s`).MatchString(dom) {
		t.Errorf("no publication rate from n1 to n2 on the link label")
	}
	for _, chart := range []string{"conns", "pub", "del", "meshSent", "loss"} {
		if !strings.Contains(dom, `data-chart="`+chart+`"`) {
			t.Errorf("chart %s is missing", chart)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", tail([]byte(dom), 6000))
	}

	_, file, _, _ := runtime.Caller(0)
	shot := filepath.Join(filepath.Dir(file), "..", "bin", "ui-status.png")
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(shot)
	headless(t, bin, url, "--screenshot="+shot, "--window-size=1200,800", "--hide-scrollbars")
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}
