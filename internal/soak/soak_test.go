package soak_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/taskd-dev/taskd/internal/soak"
	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestMain(m *testing.M) {
	soak.MaybeRunWorker()
	taskdtest.Main(m)
}

// TestSoak runs the 20-second soak (SOAK_TEST_DURATION changes it) with 8 callers and
// checks its figures: nothing lost, late, duplicated or misrouted, no zombie, no untyped
// error, no growth past the bounds, every caller recovered.
func TestSoak(t *testing.T) {
	dur := 20 * time.Second
	if s := os.Getenv("SOAK_TEST_DURATION"); s != "" {
		var err error
		if dur, err = time.ParseDuration(s); err != nil {
			t.Fatalf("SOAK_TEST_DURATION=%q: %v", s, err)
		}
	}
	r, err := soak.Run(context.Background(), soak.Options{
		TaskdBin:  taskdtest.Binary(t, "cmd/taskd"),
		WorkerBin: taskdtest.Binary(t, "cmd/taskd-soak"),
		Root:      taskdtest.RepoRoot(),
		Duration:  dur,
		Callers:   8,
		Dir:       taskdtest.TempDir(t),
		Log:       testWriter{t},
	})
	if r != nil {
		var b strings.Builder
		r.Write(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost+r.Late+r.Duplicated+r.Misrouted+r.Untyped != 0 || len(r.ZombiePIDs) != 0 {
		t.Fatalf("Run passed a report with lost %d, late %d, duplicated %d, misrouted %d, untyped %d, zombies %v",
			r.Lost, r.Late, r.Duplicated, r.Misrouted, r.Untyped, r.ZombiePIDs)
	}
	if r.Succeeded == 0 || r.Kills == 0 || r.Reloads == 0 || r.Restarts != 2 {
		t.Fatalf("the soak did not soak: %d calls succeeded, %d kills, %d reloads, %d restarts", r.Succeeded, r.Kills, r.Reloads, r.Restarts)
	}
}

// testWriter sends progress lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
