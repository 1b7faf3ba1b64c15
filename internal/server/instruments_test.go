package server

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// counts gathers c's series: value by "method/outcome".
func counts(t *testing.T, c prometheus.Collector) map[string]float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got[l["method"]+"/"+l["outcome"]] = m.GetCounter().GetValue()
		}
	}
	return got
}

// TestMethodLabelBounded: past metrics_max_methods distinct methods, calls count as
// "other"; a method seen before keeps its label after the limit is lowered.
func TestMethodLabelBounded(t *testing.T) {
	m := newMetrics()
	im := m.iface("x")
	im.setMaxMethods(2)
	for _, method := range []string{"a", "b", "c", "d", "a"} {
		im.observeCall(method, callOK, time.Now())
	}
	im.setMaxMethods(1)
	im.observeCall("b", callError, time.Time{})
	im.observeCall("e", callError, time.Time{})
	assert.Equal(t, map[string]float64{"a/ok": 2, "b/ok": 1, "other/ok": 2, "b/error": 1, "other/error": 1}, counts(t, m.calls))
}

// TestCallLatency: the status's histogram sums every method's and outcome's durations,
// "other" included, with the buckets of taskd_call_duration_seconds.
func TestCallLatency(t *testing.T) {
	im := newMetrics().iface("x")
	assert.Nil(t, im.callLatency(), "no call yet")
	im.setMaxMethods(1)
	now := time.Now()
	im.observeCall("a", callOK, now)
	im.observeCall("a", callError, now.Add(-30*time.Millisecond))
	im.observeCall("b", callTimeout, now.Add(-2*time.Minute)) // "other", past the last bound
	im.observeCall("a", callAborted, time.Time{})             // never sent: not timed
	h := im.callLatency()
	require.NotNil(t, h)
	assert.Equal(t, latencyBuckets, h.Bounds)
	assert.Equal(t, uint64(3), h.Total)
	at := func(bound float64) uint64 {
		for i, b := range h.Bounds {
			if b == bound {
				return h.Counts[i]
			}
		}
		t.Fatalf("no bound %v", bound)
		return 0
	}
	assert.Equal(t, uint64(1), at(.01))
	assert.Equal(t, uint64(2), at(.05))
	assert.Equal(t, uint64(2), at(60))
}

func TestObserveCallAllocatesNothing(t *testing.T) {
	im := newMetrics().iface("x")
	method := string([]byte("hash")) // not a constant: as decoded from a client's line
	im.observeCall(method, callOK, time.Now())
	im.observeCall("other1", callOK, time.Now())
	sent := time.Now()
	assert.Zero(t, testing.AllocsPerRun(1000, func() { im.observeCall(method, callOK, sent) }))
}

// BenchmarkObserveCall is the cost that the call metrics add to each relayed call.
func BenchmarkObserveCall(b *testing.B) {
	im := newMetrics().iface("x")
	sent := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			im.observeCall("hash", callOK, sent)
		}
	})
}
