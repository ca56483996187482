package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sockmesh/sockmesh/client"
	"github.com/sockmesh/sockmesh/integration/harness"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, returning their paths and a
// pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sockmesh test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With --tls-cert/--tls-key the client listener speaks wss:// only.
func TestTLSClientListener(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	n := harness.NewNode(t, "tls", "--tls-cert", certFile, "--tls-key", keyFile, "--demo")
	n.Start()
	wss := "wss://" + n.WSAddr + "/socketcluster/"
	d := *websocket.DefaultDialer
	d.TLSClientConfig = &tls.Config{RootCAs: pool}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URLs: []string{wss}, Dialer: &d})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Invoke(ctx, "echo", "over tls")
	if err != nil || string(got) != `"over tls"` {
		t.Fatalf("echo over wss: %s %v", got, err)
	}
	if _, _, err := websocket.DefaultDialer.Dial(n.URL(), nil); err == nil {
		t.Fatal("plain ws:// accepted on a TLS listener")
	}
}

// A cluster with --cluster-key: keyed nodes form one cluster and deliver to each other; a
// node without the key (or with another key) stays outside — it neither joins nor links.
func TestClosedMeshKeepsOutsidersOut(t *testing.T) {
	key := "c29ja21lc2gtdGVzdC1jbHVzdGVyLWtleS0zMmJ5dGU=" // base64 of 32 bytes
	other := "b3RoZXItY2x1c3Rlci1rZXktb2YtMzItYnl0ZXMhISE="
	n1 := harness.NewNode(t, "k1", "--cluster-key", key)
	n1.Start()
	n2 := harness.NewNode(t, "k2", "--cluster-key", key, "--join", n1.GossipAddr)
	n2.Start()
	waitConverged(t, []*harness.Node{n1, n2})
	outsiders := []*harness.Node{
		harness.NewNode(t, "nokey", "--join", n1.GossipAddr),
		harness.NewNode(t, "wrongkey", "--cluster-key", other, "--join", n1.GossipAddr),
	}
	for _, o := range outsiders {
		o.Start()
	}
	ctx := context.Background()
	col := newSeqChecker()
	if err := dial(t, n2.URL()).Subscribe(ctx, "secret", col.handler); err != nil {
		t.Fatal(err)
	}
	waitWanted(t, []*harness.Node{n1, n2}, "k2", 1)
	pub := dial(t, n1.URL())
	for i := 0; i < 20; i++ {
		pub.Publish("secret", pubMsg{P: "k1", S: i})
	}
	harness.Eventually(t, 10*time.Second, "keyed delivery", func() error {
		if n, _, _ := col.stats(); n < 20 {
			return fmt.Errorf("got %d of 20", n)
		}
		return nil
	})
	// Each outsider has tried to join and been refused (it says so), and is not joined.
	for _, o := range outsiders {
		harness.Eventually(t, 10*time.Second, o.Name+" refused", func() error {
			var v struct {
				Joined bool `json:"joined"`
			}
			if err := o.GetJSON("/cluster", &v); err != nil {
				return err
			}
			if v.Joined || !strings.Contains(o.Log(), "no seed answered") {
				return fmt.Errorf("joined=%v, no refused join in its log yet", v.Joined)
			}
			return nil
		})
	}
	for _, n := range []*harness.Node{n1, n2} {
		v, err := view(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range v.Members {
			if m.Name == "nokey" || m.Name == "wrongkey" {
				t.Errorf("%s admitted outsider %s (%s)", n.Name, m.Name, m.Status)
			}
		}
	}
	for _, o := range outsiders {
		v, err := view(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Peers) != 0 {
			t.Errorf("outsider %s has links: %+v", o.Name, v.Peers)
		}
	}
}
