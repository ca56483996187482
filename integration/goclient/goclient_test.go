package goclient

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sacOO7/socketcluster-client-go/scclient"
)

// node is one sockmesh process on fresh loopback ports.
type node struct {
	name, ws, admin, mesh, gossip string
	cmd                           *exec.Cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func binary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("SOCKMESH_BIN")
	if bin == "" {
		bin = "../../bin/sockmesh"
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("sockmesh binary: %v (build it with make build, or set SOCKMESH_BIN)", err)
	}
	return abs
}

func startNode(t *testing.T, name, join string) *node {
	t.Helper()
	n := &node{name: name, ws: freeAddr(t), admin: freeAddr(t), mesh: freeAddr(t), gossip: freeAddr(t)}
	args := []string{"serve", "--name", name, "--ws-addr", n.ws, "--admin-addr", n.admin, "--mesh-addr", n.mesh,
		"--gossip-addr", n.gossip, "--demo", "--auth-key", "go-client-key", "--protocol-version", "1",
		"--ping-interval", "200ms", "--ping-timeout", "1s", "--drain-duration", "100ms"}
	if join != "" {
		args = append(args, "--join", join)
	}
	n.cmd = exec.Command(binary(t), args...)
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, io.Discard
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		_ = n.cmd.Wait()
	})
	waitUntil(t, 10*time.Second, name+" ready", func() bool {
		resp, err := http.Get("http://" + n.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n
}

func waitUntil(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wants reports whether n routes channel traffic to peer (its /cluster view of the peer).
func wants(n *node, peer string) bool {
	resp, err := http.Get("http://" + n.admin + "/cluster")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v struct {
		Peers []struct {
			Name     string `json:"name"`
			Channels int    `json:"channels"`
		} `json:"peers"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return false
	}
	for _, p := range v.Peers {
		if p.Name == peer && p.Channels > 0 {
			return true
		}
	}
	return false
}

// client wraps scclient.Client with what the test observes.
type client struct {
	c            scclient.Client
	mu           sync.Mutex
	connected    chan struct{}
	disconnected chan error
	token        chan string
	messages     []string
}

func connect(t *testing.T, url string) *client {
	t.Helper()
	cl := &client{c: scclient.New(url), connected: make(chan struct{}, 1), disconnected: make(chan error, 1), token: make(chan string, 1)}
	cl.c.SetBasicListener(
		func(scclient.Client) { cl.connected <- struct{}{} },
		func(_ scclient.Client, err error) { t.Errorf("connect error: %v", err) },
		func(_ scclient.Client, err error) {
			select {
			case cl.disconnected <- err:
			default:
			}
		})
	cl.c.SetAuthenticationListener(func(_ scclient.Client, token string) { cl.token <- token }, func(scclient.Client, bool) {})
	go cl.c.Connect()
	select {
	case <-cl.connected:
	case <-time.After(5 * time.Second):
		t.Fatal("the Go client did not connect")
	}
	return cl
}

// call is EmitAck waited for.
func (cl *client) call(t *testing.T, event string, data any) (any, any) {
	t.Helper()
	type answer struct{ err, data any }
	ch := make(chan answer, 1)
	cl.c.EmitAck(event, data, func(_ string, err, data any) { ch <- answer{err, data} })
	select {
	case a := <-ch:
		return a.err, a.data
	case <-time.After(5 * time.Second):
		t.Fatalf("no answer to %s", event)
		return nil, nil
	}
}

// TestGoClientAgainstCluster is the Go client's own checks on a 2-node sockmesh cluster
// speaking protocol v1 (the client answers '#1' with '#2'; it cannot parse the v2 ping ”):
// subscribe, a burst of 50 publications from the other node, a login emit and its reply,
// #setAuthToken, unsubscribe, and staying connected across pings. Against sockmesh before
// one packet per frame, the burst arrived packed in array frames the client cannot parse.
func TestGoClientAgainstCluster(t *testing.T) {
	log.SetOutput(io.Discard) // the client logs every message it receives
	n1 := startNode(t, "g1", "")
	n2 := startNode(t, "g2", n1.gossip)
	sub := connect(t, "ws://"+n2.ws+"/socketcluster/")
	got := make(chan string, 100)
	sub.c.OnChannel("goburst", func(_ string, data any) { got <- fmt.Sprint(data) })
	ack := make(chan any, 1)
	sub.c.SubscribeAck("goburst", func(_ string, err, _ any) { ack <- err })
	if err := <-ack; err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	waitUntil(t, 10*time.Second, "g1 routing goburst to g2", func() bool { return wants(n1, "g2") })

	pub := connect(t, "ws://"+n1.ws+"/socketcluster/")
	for i := range 50 {
		pub.c.Publish("goburst", i)
	}
	for i := range 50 {
		select {
		case d := <-got:
			if d != fmt.Sprint(i) {
				t.Fatalf("publication %d arrived as %s", i, d)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 50 publications arrived", i)
		}
	}

	if err, data := sub.call(t, "login", map[string]any{"username": "alice"}); err != nil {
		t.Fatalf("login: %v %v", err, data)
	}
	select {
	case tok := <-sub.token:
		if tok == "" {
			t.Fatal("empty token")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no #setAuthToken after login")
	}
	if _, data := sub.call(t, "whoami", nil); !strings.Contains(fmt.Sprint(data), "alice") {
		t.Fatalf("whoami after login: %v", data)
	}
	uack := make(chan any, 1)
	sub.c.UnsubscribeAck("goburst", func(_ string, err, _ any) { uack <- err })
	if err := <-uack; err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	// Five ping intervals, past the ping timeout: the client answers the pings and stays.
	select {
	case err := <-sub.disconnected:
		t.Fatalf("the Go client was disconnected: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if _, data := sub.call(t, "echo", "still here"); data != "still here" {
		t.Fatalf("echo after the pings: %v", data)
	}
}
