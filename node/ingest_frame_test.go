package node

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// readFrame gets every frame whole whatever its size, into a buffer no larger than the frame,
// and reports a frame cut short as such.
func TestReadFrameGrowsAsBytesArrive(t *testing.T) {
	for _, size := range []int{1, 100, firstChunk - 1, firstChunk, firstChunk + 1, 3*firstChunk + 7, 1 << 20} {
		payload := bytes.Repeat([]byte{byte(size)}, size)
		// A reader that hands over a few KiB at a time, as a socket does.
		br := bufio.NewReaderSize(&trickle{r: bytes.NewReader(append(payload, "next"...)), n: 3000}, maxHandshake)
		frame, err := readFrame(br, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(frame[8:], payload) || cap(frame) != 8+size {
			t.Fatalf("size %d: got %d bytes in a buffer of %d", size, len(frame)-8, cap(frame))
		}
		if rest, _ := io.ReadAll(br); string(rest) != "next" {
			t.Fatalf("size %d: read past the frame: %q left", size, rest)
		}
	}
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(nil)), 10); !errors.Is(err, io.EOF) {
		t.Fatalf("nothing sent: %v, want EOF", err)
	}
	if _, err := readFrame(bufio.NewReader(bytes.NewReader([]byte("abc"))), 10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("3 of 10 bytes: %v, want ErrUnexpectedEOF", err)
	}
}

// A frame announced and not sent costs nothing: readFrame allocates nothing until its first byte.
func TestReadFrameAllocatesNothingBeforeBytes(t *testing.T) {
	br := bufio.NewReader(&trickle{r: bytes.NewReader(nil)})
	allocs := testing.AllocsPerRun(100, func() { _, _ = readFrame(br, 1<<20) })
	if allocs != 0 {
		t.Fatalf("readFrame of a 1 MiB frame with nothing sent allocated %v times", allocs)
	}
}

type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.n > 0 && len(p) > t.n {
		p = p[:t.n]
	}
	return t.r.Read(p)
}
