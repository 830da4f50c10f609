package test

import (
	"bytes"
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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-dev/roost/client"
	"github.com/roost-dev/roost/internal/proc"
	"github.com/roost-dev/roost/internal/wait"
)

// testCA issues the certificates of processes started with --tls-cert; quickHTTP trusts it.
var testCA = newTestCA()

type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA() *certAuthority {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "roost test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	quickHTTP.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
	return ca
}

// issue writes a certificate for 127.0.0.1 with the given serial and its key to certFile and
// keyFile.
func (ca *certAuthority) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "roost member"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	// Written to a temporary file and renamed, as a certificate manager would, so a reload never
	// reads half a file.
	for file, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(file+".tmp", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
}

// servedSerial is the serial of the certificate addr presents now.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: testCA.pool})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLS: nodes and a router serving TLS. Clients reach rooms over wss:// through the router
// and directly, the router dials owners over wss://, a drain hands rooms off over HTTPS with no
// message lost, and SIGHUP swaps a renewed certificate in without dropping anyone.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, testCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	flags := func(id string, serial int64) []string {
		cert, key := filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
		testCA.issue(t, serial, cert, key)
		return []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", caFile, "--cluster-secret", "tls-test-cluster-secret"}
	}
	n1 := startProc(t, "node", "n1", "", flags("n1", 11)...)
	n2 := startProc(t, "node", "n2", n1.Gossip, flags("n2", 12)...)
	rt := startProc(t, "router", "r1", n1.Gossip, flags("r1", 13)...)
	proc.WaitRingT(t, []*proc.Proc{n1, n2, rt}, 2)

	// Placement names wss:// owners.
	room := ""
	for r := range roomsByOwner(t, rt, "tls-", 1, "n1") {
		room = r
	}
	o, err := ownerFrom(t.Context(), rt, room)
	if err != nil || !strings.HasPrefix(o.WSURL, "wss://") {
		t.Fatalf("owner of %s: %+v %v", room, o, err)
	}

	// roost ctl trusts the CA it is given.
	out, err := exec.Command(proc.Roost(t), "ctl", "resolve", "--addr", rt.URL(), "--tls-ca", caFile, room).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(`"ws_url":"wss://`)) {
		t.Fatalf("ctl resolve over https: %v %s", err, out)
	}
	if out, err := exec.Command(proc.Roost(t), "ctl", "resolve", "--addr", rt.URL(), room).CombinedOutput(); err == nil {
		t.Fatalf("ctl resolve trusted an unknown CA: %s", out)
	}

	// Plain HTTP on a TLS port is refused, not served.
	if resp, err := http.Get("http://" + n1.HTTP + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to a TLS listener: %d", resp.StatusCode)
		}
	}

	opts := func() *client.Options {
		return &client.Options{Dialer: &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: testCA.pool}}}
	}
	via, err := client.Dial(t.Context(), rt.URL(), room, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer via.Close()
	direct, err := client.Dial(t.Context(), n1.URL(), room, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if via.Welcome().Node != "n1" || direct.Welcome().Node != "n1" {
		t.Fatalf("served by %s and %s, want n1", via.Welcome().Node, direct.Welcome().Node)
	}
	// The room's numbering goes on across the hand-off: a room started afresh (a failed HTTPS
	// hand-off) would number from 1 again under a new epoch.
	var nextSeq uint64 = 1
	publish := func(c *client.Conn, id string) {
		t.Helper()
		seq, err := c.PublishID(t.Context(), id, id)
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		if seq != nextSeq {
			t.Fatalf("publish %s got seq %d, want %d", id, seq, nextSeq)
		}
		nextSeq++
	}
	publish(via, "before")

	// Drain n1: the room moves to n2 over HTTPS; the router re-dials n2 over wss://.
	n1.Signal(syscall.SIGTERM)
	<-n1.Exited()
	publish(via, "after-drain")

	// Renew n2's certificate: SIGHUP serves the new one to new connections; the router's
	// connection to n2 is not disturbed.
	if got := servedSerial(t, n2.HTTP); got != 12 {
		t.Fatalf("n2 serves serial %d, want 12", got)
	}
	testCA.issue(t, 99, filepath.Join(dir, "n2.pem"), filepath.Join(dir, "n2-key.pem"))
	n2.Signal(syscall.SIGHUP)
	wait.Eventually(t, 5*time.Second, "n2 serves the renewed certificate", func() bool { return servedSerial(t, n2.HTTP) == 99 })
	// A broken file on reload keeps the certificate being served.
	if err := os.WriteFile(filepath.Join(dir, "n2.pem"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	n2.Signal(syscall.SIGHUP)
	wait.Eventually(t, 5*time.Second, "n2 logs the failed reload", func() bool {
		return strings.Contains(n2.Log(), "TLS certificate not reloaded")
	})
	if got := servedSerial(t, n2.HTTP); got != 99 {
		t.Fatalf("after a failed reload n2 serves serial %d, want 99", got)
	}
	publish(via, "after-reload")

	var got []string
	for len(got) < 3 {
		ev, err := via.Next(t.Context())
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch ev.Type {
		case client.EventMessage:
			got = append(got, ev.ID)
		case client.EventReset, client.EventGap:
			t.Fatalf("through the router: a %s event after %v", ev.Type, got)
		}
	}
	if fmt.Sprint(got) != "[before after-drain after-reload]" {
		t.Fatalf("through the router: %v", got)
	}
	if strings.Contains(rt.Log(), "certificate signed by unknown authority") {
		t.Fatal("the router did not trust the owners' certificates")
	}
}
