package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// certFiles serves the certificate and key in two PEM files, read again on reload (SIGHUP), so a
// renewed certificate is picked up without a restart. A reload that fails keeps the old one.
type certFiles struct {
	cert, key string
	cur       atomic.Pointer[tls.Certificate]
}

func loadCertFiles(cert, key string) (*certFiles, error) {
	if cert == "" || key == "" {
		return nil, errors.New("give both --tls-cert and --tls-key")
	}
	c := &certFiles{cert: cert, key: key}
	return c, c.reload()
}

// reload reads the files again.
func (c *certFiles) reload() error {
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.cert, c.key, err)
	}
	c.cur.Store(&pair)
	return nil
}

// serverConfig serves the current certificate, HTTP/1.1 only: WebSocket upgrades need it.
func (c *certFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// clientTLS is what a member or ctl trusts when it dials https:// and wss:// members: the
// system's roots, plus the CAs in caFile when one is given (a private CA, a self-signed cert).
func clientTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
