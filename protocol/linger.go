package protocol

import (
	"io"
	"net"
	"time"
)

// CloseGently ends a connection after the server's last words (a close frame, an ERR line).
// Closing a socket that still holds unread input makes the kernel send a reset, which can
// destroy those last words before the peer reads them; so it half-closes, reads and discards
// what the peer still sends for up to linger, then closes.
func CloseGently(c net.Conn, linger time.Duration) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
		_ = c.SetReadDeadline(time.Now().Add(linger))
		_, _ = io.Copy(io.Discard, c)
	}
	c.Close()
}
