package main

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math"
	"time"

	"github.com/roost-dev/roost/client"
)

// The demo stream is a small moving picture, so a stream is visible from the first minute: each
// frame is the magic "RPX1", width and height (uint16, big-endian), a frame number (uint32),
// then width×height grey levels, row by row. The demo page draws them on a canvas; `roost ctl
// tail` shows their sizes.
const (
	demoMagic  = "RPX1"
	demoWidth  = 96
	demoHeight = 54
)

// demoFrame draws frame number i: drifting interference rings.
func demoFrame(buf []byte, i uint32) []byte {
	buf = append(buf[:0], demoMagic...)
	buf = binary.BigEndian.AppendUint16(buf, demoWidth)
	buf = binary.BigEndian.AppendUint16(buf, demoHeight)
	buf = binary.BigEndian.AppendUint32(buf, i)
	t := float64(i) / 10
	cx1, cy1 := demoWidth*(0.5+0.35*math.Cos(t*0.7)), demoHeight*(0.5+0.35*math.Sin(t*0.9))
	cx2, cy2 := demoWidth*(0.5+0.35*math.Sin(t*0.5)), demoHeight*(0.5+0.35*math.Cos(t*1.1))
	for y := range demoHeight {
		for x := range demoWidth {
			d1 := math.Hypot(float64(x)-cx1, float64(y)-cy1)
			d2 := math.Hypot(float64(x)-cx2, float64(y)-cy2)
			v := math.Sin(d1/3-t*2) + math.Sin(d2/4+t*1.5)
			buf = append(buf, byte(127.5+63.75*v))
		}
	}
	return buf
}

// runDemoSource streams the demo picture into room through base (a router) at fps until ctx
// ends, reconnecting if the cluster is not there yet or the stream breaks.
func runDemoSource(ctx context.Context, base, room string, fps int, token string, log *slog.Logger) {
	log = log.With("room", room)
	tick := time.NewTicker(time.Second / time.Duration(fps))
	defer tick.Stop()
	var (
		src *client.Stream
		buf []byte
		i   uint32
	)
	defer func() {
		if src != nil {
			src.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if src == nil {
			s, err := client.OpenStream(ctx, base, room, &client.StreamOptions{Token: token, DialTimeout: time.Second, MaxReconnectWait: 5 * time.Second})
			if err != nil {
				log.Debug("demo source: cannot reach the room's owner yet", "err", err)
				continue
			}
			src = s
		}
		buf = demoFrame(buf, i)
		if err := src.Send(ctx, buf); err != nil {
			if ctx.Err() == nil {
				log.Warn("demo source: stream broke; starting again", "err", err)
			}
			src.Close()
			src = nil
			continue
		}
		i++
	}
}
