package protocol

import (
	"errors"
	"fmt"
)

// MaxRoomName is the longest room name, in bytes.
const MaxRoomName = 128

// ErrBadRoom is returned by ValidRoom for names outside the contract.
var ErrBadRoom = errors.New("bad room name")

// ValidRoom checks a room name: 1–128 bytes of A-Z a-z 0-9 . _ : -
func ValidRoom(name string) error {
	if len(name) == 0 || len(name) > MaxRoomName {
		return fmt.Errorf("%w: a room name is 1 to %d bytes, got %d", ErrBadRoom, MaxRoomName, len(name))
	}
	for i := 0; i < len(name); i++ {
		if !roomByte[name[i]] {
			return fmt.Errorf("%w: %q has %q at byte %d; use only A-Z a-z 0-9 . _ : -", ErrBadRoom, name, name[i], i)
		}
	}
	return nil
}

var roomByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._:-" {
		t[c] = true
	}
	return t
}()
