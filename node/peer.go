package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Node-to-node calls (hand-off) are signed with the cluster secret when one is set: an HMAC of
// the method, path, a timestamp and the body's hash, in the Roost-Signature header. A request
// with a missing, wrong or stale signature is refused with 401.

const (
	signatureHeader = "Roost-Signature"
	maxClockSkew    = time.Minute
)

// maxPeerBody bounds a node-to-node body: a hand-off batch holds up to handoffChunkBytes of
// history, or one room's whole history when that is larger, plus its remembered ids.
func (n *Node) maxPeerBody() int64 {
	frame := max(n.cfg.MaxFrame, int64(n.cfg.IngestMaxFrame))
	return int64(handoffChunkBytes) + int64(n.cfg.HistoryBytes) + frame + int64(n.cfg.DedupeIDs)*512 + 1<<20
}

// readLimited reads all of r, or fails if it is longer than limit.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("body longer than %d bytes", limit)
	}
	return b, err
}

var errBadSignature = errors.New("request not signed with this cluster's secret")

func signature(key []byte, method, path string, ts int64, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%d\n%x", method, path, ts, sum)
	return strconv.FormatInt(ts, 10) + "." + hex.EncodeToString(m.Sum(nil))
}

// verifyPeer reads the body of a node-to-node request and checks its signature.
func (n *Node) verifyPeer(r *http.Request) ([]byte, error) {
	body, err := readLimited(r.Body, n.maxPeerBody())
	if err != nil {
		return nil, err
	}
	if len(n.cfg.PeerKey) == 0 {
		return body, nil
	}
	ts, _, ok := strings.Cut(r.Header.Get(signatureHeader), ".")
	t, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || time.Since(time.Unix(t, 0)).Abs() > maxClockSkew {
		return nil, errBadSignature
	}
	got := []byte(r.Header.Get(signatureHeader))
	for _, key := range append([][]byte{n.cfg.PeerKey}, n.cfg.PeerAcceptKeys...) {
		if hmac.Equal([]byte(signature(key, r.Method, r.URL.Path, t, body)), got) {
			return body, nil
		}
	}
	return nil, errBadSignature
}

// callPeer POSTs body to a peer's path, signed, and returns the answer's body.
func (n *Node) callPeer(ctx context.Context, base, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if len(n.cfg.PeerKey) > 0 {
		req.Header.Set(signatureHeader, signature(n.cfg.PeerKey, http.MethodPost, path, time.Now().Unix(), body))
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := readLimited(resp.Body, n.maxPeerBody())
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s: %s", base, path, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}
