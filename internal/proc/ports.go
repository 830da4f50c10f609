package proc

import (
	"errors"
	"net"
)

// freePort finds a loopback port free for TCP (and UDP with udpToo, as gossip wants both).
func freePort(udpToo bool) (string, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if !udpToo {
			return addr, nil
		}
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port for TCP and UDP in 50 tries")
}
