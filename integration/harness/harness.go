// Package harness starts and controls real sockmesh node processes for integration tests:
// free loopback ports, readiness polling, signals, and condition polling with deadlines.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockmesh/sockmesh/node"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the sockmesh binary: $SOCKMESH_BIN, or one built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SOCKMESH_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sockmesh-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sockmesh")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/sockmesh")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a loopback TCP port that was free a moment ago (with udp, free for UDP
// too: gossip needs both). Ports come from 20000–32767, below Linux's ephemeral range: a node
// that keeps dialling a peer's not-yet-listening port can otherwise be handed that very
// port as its own ephemeral source port (a TCP self-connect), and the peer then fails to bind.
func FreePort(t testing.TB, udp bool) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		port := 20000 + mrand.IntN(12768)
		portsMu.Lock()
		taken := portsGiven[port]
		portsGiven[port] = true
		portsMu.Unlock()
		if taken {
			continue // never hand out a port twice in one test process
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		if udp {
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				l.Close()
				continue
			}
			u.Close()
		}
		l.Close()
		return port
	}
	t.Fatal("no free port in 20000-32767")
	return 0
}

// Node is one sockmesh process.
type Node struct {
	t          testing.TB
	Name       string
	WSAddr     string
	AdminAddr  string
	MeshAddr   string
	GossipAddr string
	Args       []string // extra serve flags
	Env        []string
	// AdminToken is the node's --admin-token (AdminTokenDefault unless changed before
	// Launch; empty: none); Get sends it.
	AdminToken string
	// Wrap, when set, is a command prefix the binary runs under, e.g.
	// {"ip", "netns", "exec", "ns1"}; it must exec the binary (so Pid and signals reach it).
	Wrap    []string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	logMu   sync.Mutex
	log     bytes.Buffer
}

// AdminTokenDefault is every test node's admin token unless the test sets another: the
// admin listener is guarded in every test, as in production.
const AdminTokenDefault = "harness-admin-token"

// NewNode picks ports for a node named name; Start runs it.
func NewNode(t testing.TB, name string, args ...string) *Node {
	return &Node{
		t: t, Name: name, Args: args, AdminToken: AdminTokenDefault,
		WSAddr:     fmt.Sprintf("127.0.0.1:%d", FreePort(t, false)),
		AdminAddr:  fmt.Sprintf("127.0.0.1:%d", FreePort(t, false)),
		MeshAddr:   fmt.Sprintf("127.0.0.1:%d", FreePort(t, false)),
		GossipAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t, true)),
	}
}

// NewNodeAt is NewNode with fixed addresses on host (e.g. a network namespace's own IP):
// ws basePort, admin basePort+1, mesh basePort+2, gossip basePort+3.
func NewNodeAt(t testing.TB, name, host string, basePort int, args ...string) *Node {
	hp := func(off int) string { return net.JoinHostPort(host, fmt.Sprint(basePort+off)) }
	return &Node{t: t, Name: name, Args: args, AdminToken: AdminTokenDefault, WSAddr: hp(0), AdminAddr: hp(1), MeshAddr: hp(2), GossipAddr: hp(3)}
}

// URL is the node's client WebSocket URL.
func (n *Node) URL() string { return "ws://" + n.WSAddr + "/socketcluster/" }

// AdminURL is the node's admin base URL.
func (n *Node) AdminURL() string { return "http://" + n.AdminAddr }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Launch runs the process without waiting for it to become healthy.
func (n *Node) Launch() {
	n.t.Helper()
	args := append([]string{"serve", "--name", n.Name, "--ws-addr", n.WSAddr, "--admin-addr", n.AdminAddr,
		"--mesh-addr", n.MeshAddr, "--gossip-addr", n.GossipAddr, "--log-level", "debug"}, n.Args...)
	if n.AdminToken != "" {
		args = append(args, "--admin-token", n.AdminToken)
	}
	if len(n.Wrap) > 0 {
		args = append(append(append([]string{}, n.Wrap[1:]...), Binary(n.t)), args...)
		n.cmd = exec.Command(n.Wrap[0], args...)
	} else {
		n.cmd = exec.Command(Binary(n.t), args...)
	}
	n.cmd.Env = append(os.Environ(), n.Env...)
	w := lockedWriter{&n.logMu, &n.log}
	n.cmd.Stdout, n.cmd.Stderr = w, w
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		n.exitErr = cmd.Wait()
		close(done)
	}(n.cmd, n.done)
	n.t.Cleanup(func() {
		n.Kill()
		if n.t.Failed() {
			n.t.Logf("--- log of %s ---\n%s", n.Name, n.Log())
		}
	})
}

// Start runs the process and waits until /healthz answers. The process is killed at the
// end of the test if still running; its log is printed when the test failed.
func (n *Node) Start() {
	n.t.Helper()
	n.Launch()
	err := Poll(15*time.Second, func() error {
		if n.Exited() {
			return nil
		}
		_, err := n.Get("/healthz")
		return err
	})
	if n.Exited() {
		n.t.Fatalf("node %s exited at start: %v\n%s", n.Name, n.exitErr, n.Log())
	}
	if err != nil {
		n.t.Fatalf("node %s not healthy within 15s: %v", n.Name, err)
	}
}

// Log returns what the process printed so far.
func (n *Node) Log() string {
	n.logMu.Lock()
	defer n.logMu.Unlock()
	return n.log.String()
}

// Get fetches an admin path and returns the body of a 200 answer.
func (n *Node) Get(path string) ([]byte, error) {
	c := http.Client{Timeout: 2 * time.Second}
	req, err := http.NewRequest(http.MethodGet, n.AdminURL()+path, nil)
	if err != nil {
		return nil, err
	}
	if n.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+n.AdminToken)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("%s: %s", path, resp.Status)
	}
	return b, nil
}

// GetJSON fetches an admin path into v.
func (n *Node) GetJSON(path string, v any) error {
	b, err := n.Get(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Metric returns the sum of a metric's samples whose labels contain every given
// `name="value"` pair, read from /metrics.
func (n *Node) Metric(name string, labels ...string) (float64, error) {
	b, err := n.Get("/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		sum += v
	}
	return sum, nil
}

// Signal sends sig to the process.
func (n *Node) Signal(sig syscall.Signal) {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Pid is the process id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Kill sends SIGKILL (SIGCONT first, in case it was stopped) and waits for the exit.
func (n *Node) Kill() {
	if n.cmd == nil || n.done == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	n.Signal(syscall.SIGCONT)
	n.Signal(syscall.SIGKILL)
	<-n.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, returning its error.
func (n *Node) Stop(timeout time.Duration) error {
	n.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return n.exitErr
	case <-time.After(timeout):
		n.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", n.Name, timeout)
	}
}

// Exited reports whether the process has ended.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Eventually polls check until it returns nil or the deadline passes, then fails the test
// with the last error.
func Eventually(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	if err := Poll(within, check); err != nil {
		t.Fatalf("%s: not within %s: %v", what, within, err)
	}
}

// Poll is Eventually without the test: it returns the last error at the deadline.
func Poll(within time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// Cluster reads the node's /cluster view into the node package's own type, so tests and the
// endpoint cannot drift apart.
func (n *Node) Cluster() (node.Cluster, error) {
	var v node.Cluster
	err := n.GetJSON("/cluster", &v)
	return v, err
}
