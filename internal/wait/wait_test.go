package wait

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fatalTB records Fatalf and stops the caller, as testing.T's Fatalf does.
type fatalTB struct {
	testing.TB
	msg string
}

type stopped struct{}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	Eventually(t, time.Second, "three calls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func TestEventuallySaysWhatItWaitedFor(t *testing.T) {
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != (stopped{}) {
				panic(r)
			}
		}()
		Eventually(f, 30*time.Millisecond, "the moon", func() bool { return false })
	}()
	if !strings.Contains(f.msg, "not within 30ms: the moon") {
		t.Fatalf("failure message %q", f.msg)
	}
}
