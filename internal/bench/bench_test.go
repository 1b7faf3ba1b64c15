package bench

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

func TestBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64() >> r.IntN(64)
		i := bucketOf(v)
		low, width := bucketRange(i)
		require.True(t, low <= v && v-low < width, "v=%d: bucket %d is [%d, %d+%d)", v, i, low, low, width)
		require.Less(t, i, numBuckets)
		if v >= subBuckets {
			require.LessOrEqual(t, float64(width)/float64(low), 1.0/subBuckets, "v=%d", v)
		}
	}
	assert.Equal(t, 0, bucketOf(0))
	assert.Equal(t, numBuckets-1, bucketOf(^uint64(0)))
}

func TestHistogram(t *testing.T) {
	var h Histogram
	assert.Zero(t, h.Quantile(0.5))
	var a, b Histogram
	for i := 1; i <= 10000; i++ {
		d := time.Duration(i) * time.Microsecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	h.Merge(&a)
	h.Merge(&b)
	assert.EqualValues(t, 10000, h.Count())
	assert.Equal(t, 10*time.Millisecond, h.Max())
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		want := q * float64(10*time.Millisecond)
		assert.InEpsilon(t, want, float64(h.Quantile(q)), 0.01, "q=%v", q)
	}
	assert.Equal(t, h.Max(), h.Quantile(1))
	h.Record(-time.Second)
	assert.Zero(t, h.Quantile(0))
}

// countingSetup returns callers that each count their calls (no I/O); block, if not nil,
// is called before every call.
func countingSetup(setups, cleanups *atomic.Int64, block func(int)) Setup {
	return func(_ context.Context, i int) (Op, func(), error) {
		setups.Add(1)
		return func(_ context.Context, n int, rec *Histogram) (int, error) {
			if block != nil {
				block(n)
			}
			for range n {
				rec.Record(time.Microsecond)
			}
			return n, nil
		}, func() { cleanups.Add(1) }, nil
	}
}

func TestDriveCount(t *testing.T) {
	var setups, cleanups, biggest atomic.Int64
	var starts, stops int
	plan := Plan{Callers: 3, Calls: 1000, Batch: 7,
		OnStart: func() { starts++ }, OnStop: func() { stops++ }}
	res, err := Drive(context.Background(), plan, countingSetup(&setups, &cleanups, func(n int) {
		for {
			b := biggest.Load()
			if int64(n) <= b || biggest.CompareAndSwap(b, int64(n)) {
				return
			}
		}
	}))
	require.NoError(t, err)
	assert.EqualValues(t, 1000, res.Calls)
	assert.EqualValues(t, 1000, res.Latency.Count())
	assert.EqualValues(t, 7, biggest.Load(), "batches up to Plan.Batch")
	assert.EqualValues(t, 3, setups.Load())
	assert.EqualValues(t, 3, cleanups.Load())
	assert.Equal(t, []int{1, 1}, []int{starts, stops})
	assert.False(t, res.Interrupted)
	assert.Positive(t, res.CallsPerSec())
}

func TestDriveDuration(t *testing.T) {
	var setups, cleanups atomic.Int64
	res, err := Drive(context.Background(), Plan{Callers: 2, Duration: 20 * time.Millisecond}, countingSetup(&setups, &cleanups, nil))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, res.Elapsed, 20*time.Millisecond)
	assert.Positive(t, res.Calls)
	assert.Equal(t, res.Calls, int64(res.Latency.Count()))
}

func TestDriveProgressAndInterrupt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progressed := make(chan struct{})
	var reported atomic.Int64
	plan := Plan{Callers: 2, Duration: time.Minute, ProgressEvery: time.Millisecond,
		Progress: func(calls int64, _ time.Duration) {
			if reported.Add(1) == 1 {
				close(progressed)
			}
		}}
	var setups, cleanups atomic.Int64
	var calls atomic.Int64
	// The callers call until progress was reported, then the run is interrupted.
	res, err := Drive(ctx, plan, countingSetup(&setups, &cleanups, func(int) {
		if calls.Add(1) == 100 {
			<-progressed
			cancel()
		}
	}))
	require.NoError(t, err)
	assert.True(t, res.Interrupted)
	assert.Positive(t, reported.Load())
	assert.Less(t, res.Elapsed, time.Minute)
	assert.EqualValues(t, 2, cleanups.Load())
}

func TestDriveErrors(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int64
	res, err := Drive(context.Background(), Plan{Callers: 4, Duration: time.Minute}, func(context.Context, int) (Op, func(), error) {
		return func(context.Context, int, *Histogram) (int, error) {
			if calls.Add(1) == 50 {
				return 0, boom
			}
			return 1, nil
		}, nil, nil
	})
	assert.ErrorIs(t, err, boom)
	assert.Less(t, res.Elapsed, time.Minute)

	var cleanups atomic.Int64
	_, err = Drive(context.Background(), Plan{Callers: 3, Calls: 10}, func(_ context.Context, i int) (Op, func(), error) {
		if i == 2 {
			return nil, nil, boom
		}
		return nil, func() { cleanups.Add(1) }, nil
	})
	assert.ErrorIs(t, err, boom)
	assert.ErrorContains(t, err, "setting up caller 3")
	assert.EqualValues(t, 2, cleanups.Load(), "callers set up before the failure are cleaned up")

	_, err = Drive(context.Background(), Plan{Callers: 0, Calls: 1}, nil)
	assert.Error(t, err)
	_, err = Drive(context.Background(), Plan{Callers: 1}, nil)
	assert.Error(t, err)
}

func TestProc(t *testing.T) {
	hz := clockTicks()
	assert.Positive(t, hz)
	cpu, err := procCPU(os.Getpid(), hz)
	require.NoError(t, err)
	assert.Positive(t, cpu)
	rss, err := procRSS(os.Getpid())
	require.NoError(t, err)
	assert.Greater(t, rss, int64(1<<20))
	_, err = procCPU(-1, hz)
	assert.Error(t, err)
	assert.Contains(t, machine(), "CPUs (nproc)")
}

func TestFormat(t *testing.T) {
	assert.Equal(t, "0", fmtInt(0))
	assert.Equal(t, "999", fmtInt(999))
	assert.Equal(t, "1,000", fmtInt(999.6))
	assert.Equal(t, "1,234,567", fmtInt(1234567))
	assert.Equal(t, "48.3 µs", fmtLatency(48300*time.Nanosecond))
	assert.Equal(t, "480 µs", fmtLatency(480*time.Microsecond))
	assert.Equal(t, "1.62 ms", fmtLatency(1618*time.Microsecond))
	assert.Equal(t, "23.5 ms", fmtLatency(23500*time.Microsecond))
	m := median([]run{{callsPerSec: 3, p50: 5}, {callsPerSec: 1, p50: 9}, {callsPerSec: 2, p50: 1}})
	assert.Equal(t, run{callsPerSec: 2, p50: 5}, m)
	assert.Equal(t, 2.5, median([]run{{callsPerSec: 2}, {callsPerSec: 3}}).callsPerSec)
}

// TestSuiteSmoke runs the whole suite, very briefly, against real binaries.
func TestSuiteSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several daemons")
	}
	var out, log bytes.Buffer
	err := RunSuite(context.Background(), Suite{
		TaskdBin: taskdtest.Binary(t, "cmd/taskd"), EchoBin: taskdtest.Binary(t, "examples/echo"),
		LeaseBin: taskdtest.Binary(t, "internal/taskdtest/leaseworker"),
		Duration: 20 * time.Millisecond, Runs: 1, Warmup: -1, Callers: []int{1, 2}, Pipeline: 4,
		RSSWorkers: 3, Starts: 1, Out: &out, Log: &log,
	})
	require.NoError(t, err, "log:\n%s", log.String())
	report := out.String()
	for _, want := range []string{"machine: ", "| (a) direct pipe, no taskd | 2 |", "| (d) taskd, 4 pipelined Go per checkout | 1 |",
		"(e) taskd, held checkout, 4 KiB | 2 |", "| (f) direct pipe, minimal single-goroutine worker (floor) | 2 |",
		"4 KiB call (e): client CPU/call", "first checkout after start", "taskd RSS, 3 idle workers", "| target (issue 4 unless said) |"} {
		assert.Contains(t, report, want)
	}
	assert.Equal(t, (len(scenarios)+len(leaseScenarios))*2, strings.Count(report, "\n| ("), "a row per scenario and caller count:\n%s", report)
}
