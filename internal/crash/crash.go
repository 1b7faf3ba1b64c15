package crash

import (
	"os"

	"go.uber.org/zap"
)

// exit is os.Exit; tests replace it.
var exit = os.Exit

// OnPanic, deferred at the top of a goroutine, logs a panic of that goroutine (what, where,
// the stack) on log at error level and exits with status 2. It does nothing when the
// goroutine returns normally. where names the goroutine for the log, such as "session".
func OnPanic(log *zap.Logger, where string) {
	r := recover()
	if r == nil {
		return
	}
	log.Error("panic: taskd is exiting (a bug: please report it with this entry)",
		zap.String("goroutine", where), zap.Any("panic", r), zap.StackSkip("stack", 1))
	_ = log.Sync()
	exit(2)
}
