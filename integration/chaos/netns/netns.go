// Package netns builds a small multi-host network on one machine for chaos tests: one
// network namespace per node, joined by a bridge in a hub namespace, plus a veth from the
// test's own namespace to the bridge so the test process reaches every node. Partitions are
// iptables DROP rules (TCP and UDP, by peer address) in a CHAOS chain inside the node
// namespaces. Names are unique per run; everything is deleted by t.Cleanup, also on failure.
// Why it is built this way: docs/mesh-libraries.md, "Testing several hosts on one machine".
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Available reports why namespaces and iptables cannot be used here (nil when they can).
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces and iptables)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s in PATH (apt-get install -y iproute2 iptables)", tool)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns unusable: %v %s", err, out)
	}
	return nil
}

// Net is one run's network.
type Net struct {
	t      testing.TB
	ID     string   // unique per run
	Subnet string   // "10.X.Y"
	HostIP string   // the test process's address on the bridge
	Hub    string   // hub namespace (holds the bridge)
	NS     []string // node namespaces; node i (0-based) has IP Subnet.(i+1)
	hostIf string
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// New creates n node namespaces on a fresh bridge. It skips the test when Available fails.
func New(t testing.TB, n int) *Net {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("network namespaces unavailable: %v", err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	nw := &Net{t: t, ID: id, Hub: "smc" + id + "-hub", hostIf: "smh" + id}
	routes, _ := exec.Command("ip", "-4", "route").Output()
	for i := 0; i < 50; i++ {
		nw.Subnet = fmt.Sprintf("10.%d.%d", 200+int(b[0]+byte(i))%50, int(b[1])+i)
		if !strings.Contains(string(routes), nw.Subnet+".") {
			break
		}
	}
	nw.HostIP = nw.Subnet + ".254"
	t.Cleanup(nw.destroy)
	must := func(args ...string) {
		t.Helper()
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("ip", "netns", "add", nw.Hub)
	must("ip", "-n", nw.Hub, "link", "set", "lo", "up")
	must("ip", "-n", nw.Hub, "link", "add", "br0", "type", "bridge")
	must("ip", "-n", nw.Hub, "link", "set", "br0", "up")
	// The test process's own leg.
	must("ip", "link", "add", nw.hostIf, "type", "veth", "peer", "name", "hb"+id, "netns", nw.Hub)
	must("ip", "-n", nw.Hub, "link", "set", "hb"+id, "master", "br0", "up")
	must("ip", "addr", "add", nw.HostIP+"/24", "dev", nw.hostIf)
	must("ip", "link", "set", nw.hostIf, "up")
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("smc%s-n%d", id, i+1)
		nw.NS = append(nw.NS, ns)
		must("ip", "netns", "add", ns)
		must("ip", "-n", ns, "link", "set", "lo", "up")
		br := fmt.Sprintf("v%sn%d", id, i+1)
		must("ip", "-n", nw.Hub, "link", "add", br, "type", "veth", "peer", "name", "eth0", "netns", ns)
		must("ip", "-n", nw.Hub, "link", "set", br, "master", "br0", "up")
		must("ip", "-n", ns, "addr", "add", nw.IP(i)+"/24", "dev", "eth0")
		must("ip", "-n", ns, "link", "set", "eth0", "up")
		// A chain of our own, so a heal is one flush.
		must("ip", "netns", "exec", ns, "iptables", "-w", "-N", "CHAOS")
		must("ip", "netns", "exec", ns, "iptables", "-w", "-I", "INPUT", "-j", "CHAOS")
		must("ip", "netns", "exec", ns, "iptables", "-w", "-I", "OUTPUT", "-j", "CHAOS")
	}
	if err := nw.staticNeighbors(); err != nil {
		t.Fatal(err)
	}
	// The bridge forwards once the ports are up; wait until every node answers.
	for i := range nw.NS {
		deadline := time.Now().Add(10 * time.Second)
		for {
			// Nothing listens on port 1: a refusal proves the path works.
			c, err := net.DialTimeout("tcp", nw.IP(i)+":1", time.Second)
			if c != nil {
				c.Close()
			}
			if err == nil || strings.Contains(err.Error(), "refused") {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("namespace %s not reachable: %v", nw.NS[i], err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nw
}

// staticNeighbors gives every namespace (and the test's own leg) a permanent neighbour
// entry for every other address on the bridge. The kernel's neighbour table is shared by all
// namespaces and holds at most gc_thresh3 (1,024 by default) learned entries: 32 namespaces
// that each learn 32 neighbours overflow it, and packets are dropped until entries expire
// (32-node clusters took 49 s to join, clients timed out). Permanent entries do not count.
func (nw *Net) staticNeighbors() error {
	mac := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"-o"}, args...)...).Output()
		if err != nil {
			return "", err
		}
		f := strings.Fields(string(out))
		for i, w := range f {
			if w == "link/ether" && i+1 < len(f) {
				return f[i+1], nil
			}
		}
		return "", fmt.Errorf("no MAC in %q", out)
	}
	macs := make([]string, len(nw.NS))
	for i, ns := range nw.NS {
		m, err := mac("-n", ns, "link", "show", "eth0")
		if err != nil {
			return fmt.Errorf("MAC of %s: %w", ns, err)
		}
		macs[i] = m
	}
	hostMAC, err := mac("link", "show", nw.hostIf)
	if err != nil {
		return fmt.Errorf("MAC of %s: %w", nw.hostIf, err)
	}
	batch := func(ns []string, lines []string) error {
		args := append(ns, "-batch", "-")
		cmd := exec.Command("ip", args...)
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v %s", args, err, out)
		}
		return nil
	}
	var host []string
	for i, ns := range nw.NS {
		lines := []string{fmt.Sprintf("neigh replace %s lladdr %s dev eth0 nud permanent", nw.HostIP, hostMAC)}
		for j := range nw.NS {
			if j != i {
				lines = append(lines, fmt.Sprintf("neigh replace %s lladdr %s dev eth0 nud permanent", nw.IP(j), macs[j]))
			}
		}
		if err := batch([]string{"-n", ns}, lines); err != nil {
			return err
		}
		host = append(host, fmt.Sprintf("neigh replace %s lladdr %s dev %s nud permanent", nw.IP(i), macs[i], nw.hostIf))
	}
	return batch(nil, host)
}

// IP is node i's address (0-based).
func (nw *Net) IP(i int) string { return nw.Subnet + "." + strconv.Itoa(i+1) }

// Wrap is the command prefix that runs a program in node i's namespace.
func (nw *Net) Wrap(i int) []string { return []string{"ip", "netns", "exec", nw.NS[i]} }

// Exec runs a command in node i's namespace.
func (nw *Net) Exec(i int, args ...string) error {
	return run(append(nw.Wrap(i), args...)...)
}

// Block drops every packet (TCP, UDP, anything) from each node of `from` to each node of
// `to`: an OUTPUT rule on the sender and an INPUT rule on the receiver. Call it both ways for
// a full partition.
func (nw *Net) Block(from, to []int) error {
	for _, a := range from {
		for _, b := range to {
			if err := nw.Exec(a, "iptables", "-w", "-A", "CHAOS", "-d", nw.IP(b), "-j", "DROP"); err != nil {
				return err
			}
			if err := nw.Exec(b, "iptables", "-w", "-A", "CHAOS", "-s", nw.IP(a), "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition rule.
func (nw *Net) Heal() error {
	for i := range nw.NS {
		if err := nw.Exec(i, "iptables", "-w", "-F", "CHAOS"); err != nil {
			return err
		}
	}
	return nil
}

// Dropped is the number of packets node i's CHAOS rules dropped so far.
func (nw *Net) Dropped(i int) (int, error) {
	out, err := exec.Command("ip", "netns", "exec", nw.NS[i], "iptables", "-w", "-L", "CHAOS", "-n", "-v", "-x").Output()
	if err != nil {
		return 0, err
	}
	total := 0
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "DROP" {
			v, _ := strconv.Atoi(f[0])
			total += v
		}
	}
	return total, nil
}

// TCPReach reports whether node i can open a TCP connection to addr within timeout.
func (nw *Net) TCPReach(i int, addr string, timeout time.Duration) bool {
	host, port, _ := strings.Cut(addr, ":")
	secs := fmt.Sprintf("%.1f", timeout.Seconds())
	return nw.Exec(i, "timeout", secs, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)) == nil
}

// UDPReach reports whether a UDP datagram from node i reaches node j (a one-shot listener in
// j's namespace, fed by i) within timeout.
func (nw *Net) UDPReach(i, j int, port int, timeout time.Duration) bool {
	secs := fmt.Sprintf("%.1f", timeout.Seconds())
	lst := exec.Command("ip", "netns", "exec", nw.NS[j], "timeout", secs, "python3", "-c",
		fmt.Sprintf("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('%s',%d));print(s.recv(64).decode())", nw.IP(j), port))
	var out strings.Builder
	lst.Stdout = &out
	done := make(chan struct{})
	go func() {
		for k := 0; k < 200; k++ {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_ = nw.Exec(i, "bash", "-c", fmt.Sprintf("echo probe > /dev/udp/%s/%d", nw.IP(j), port))
		}
	}()
	_ = lst.Run()
	close(done)
	return strings.Contains(out.String(), "probe")
}

func (nw *Net) destroy() {
	for _, ns := range append(append([]string{}, nw.NS...), nw.Hub) {
		_ = run("ip", "netns", "del", ns)
	}
	_ = run("ip", "link", "del", nw.hostIf)
}
