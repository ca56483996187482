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
	"math/big"
	"net"
	"os"
	"path/filepath"
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
