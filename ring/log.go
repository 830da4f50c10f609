package ring

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newMemberlistLogger routes memberlist's "[LEVEL] memberlist: ..." lines to slog at the matching
// level, so an operator sees one log stream.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l.With("component", "memberlist")}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lv := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if rest, ok := bytes.CutPrefix(msg, []byte(lv.tag)); ok {
			level, msg = lv.level, bytes.TrimSpace(rest)
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	w.l.Log(context.Background(), level, string(msg))
	return len(p), nil
}
