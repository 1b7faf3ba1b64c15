package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/wire"
)

// The metrics that taskd counts as things happen (pool gauges and counters are read when
// Prometheus scrapes: see poolCollector). docs/metrics.md lists them all.
//
// A call's metrics are recorded on the relay's hot path, so recording one allocates
// nothing: each interface keeps its methods' counters and histograms in a map read under
// an RWMutex (the lookup takes the method string already decoded), and the children of
// each (method, outcome) pair are resolved once, the first time it occurs.

// latencyBuckets are the histogram buckets, in seconds, of every duration taskd records:
// from 100µs (a relayed call to a fast worker) to a minute (call_timeout's default).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// waitOutcome is how a checkout request ended: taskd_checkout_wait_seconds's outcome label.
type waitOutcome uint8

const (
	waitGranted   waitOutcome = iota // a worker was granted
	waitRefused                      // refused: overloaded, removed, shutting down
	waitAbandoned                    // the client gave up (or disconnected) first
	numWaitOutcomes
)

var waitOutcomeNames = [numWaitOutcomes]string{"granted", "refused", "abandoned"}

// callOutcome is how a call ended: the outcome label of the call metrics.
type callOutcome uint8

const (
	callOK      callOutcome = iota // the worker answered ok
	callError                      // the worker answered err (the call raised)
	callTimeout                    // call_timeout passed: the worker was killed
	callLost                       // the worker died, broke the protocol, or was killed
	callAborted                    // not run (ep rule), or given up by the client
	numCallOutcomes
)

var callOutcomeNames = [numCallOutcomes]string{"ok", "error", "timeout", "lost", "aborted"}

// otherMethod is the method label of the calls of methods past metrics_max_methods.
const otherMethod = "other"

// metrics holds the instruments of every interface, kept across reloads (an interface
// removed and added again continues its series). Safe for concurrent use.
type metrics struct {
	wait, hold, callDur, spawn *prometheus.HistogramVec
	calls, checkouts           *prometheus.CounterVec

	mu     sync.RWMutex
	ifaces map[string]*ifaceMetrics
}

func newMetrics() *metrics {
	h := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets}, labels)
	}
	return &metrics{
		wait: h("taskd_checkout_wait_seconds", "Time from a checkout request to its grant or refusal, by outcome (granted, refused, abandoned).",
			"interface", "outcome"),
		hold: h("taskd_checkout_hold_seconds", "Time from a checkout's grant to its worker's return to the pool.", "interface"),
		callDur: h("taskd_call_duration_seconds", "Time from sending a call to the worker to its answer, by method and outcome (ok, error, timeout, lost, aborted).",
			"interface", "method", "outcome"),
		spawn: h("taskd_worker_spawn_seconds", "Time from starting a worker process to its ready message.", "interface"),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskd_calls_total",
			Help: "Calls answered, by method and outcome (ok, error, timeout, lost, aborted)."}, []string{"interface", "method", "outcome"}),
		checkouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskd_checkouts_total",
			Help: "Checkout requests of a known interface, by outcome (granted, refused, abandoned)."}, []string{"interface", "outcome"}),
		ifaces: make(map[string]*ifaceMetrics),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.wait, m.hold, m.callDur, m.spawn, m.calls, m.checkouts}
}

// iface returns the instruments of interface name, creating them the first time.
func (m *metrics) iface(name string) *ifaceMetrics {
	m.mu.RLock()
	im := m.ifaces[name]
	m.mu.RUnlock()
	if im != nil {
		return im
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if im = m.ifaces[name]; im != nil {
		return im
	}
	im = &ifaceMetrics{m: m, name: name,
		hold: m.hold.WithLabelValues(name), spawn: m.spawn.WithLabelValues(name)}
	for o := range numWaitOutcomes {
		im.wait[o] = m.wait.WithLabelValues(name, waitOutcomeNames[o])
		im.checkouts[o] = m.checkouts.WithLabelValues(name, waitOutcomeNames[o])
	}
	im.other = &methodMetrics{name: otherMethod}
	im.maxMethods.Store(config.DefaultMetricsMaxMethods)
	m.ifaces[name] = im
	return im
}

// ifaceMetrics are one interface's instruments. Safe for concurrent use.
type ifaceMetrics struct {
	m          *metrics
	name       string
	maxMethods atomic.Int64 // metrics_max_methods

	wait        [numWaitOutcomes]prometheus.Observer
	checkouts   [numWaitOutcomes]prometheus.Counter
	hold, spawn prometheus.Observer

	// methods (name → *methodMetrics; at most maxMethods, never shrinks) is read on every
	// call without a lock (a sync.Map: an RWMutex's read lock would make every call of
	// the daemon write one shared cache line); mu orders the additions, counted in n.
	mu      sync.Mutex
	methods sync.Map
	n       atomic.Int64
	other   *methodMetrics // the methods past maxMethods
}

// methodMetrics are the call instruments of one method of an interface: per outcome, the
// children of taskd_call_duration_seconds and taskd_calls_total, resolved the first time.
type methodMetrics struct {
	name string
	out  [numCallOutcomes]atomic.Pointer[callInstruments]
}

type callInstruments struct {
	dur   prometheus.Observer
	count prometheus.Counter
}

// setMaxMethods applies metrics_max_methods: methods already labelled keep their label.
func (im *ifaceMetrics) setMaxMethods(n int) { im.maxMethods.Store(int64(n)) }

// observeWait records how a checkout request that began at asked ended.
func (im *ifaceMetrics) observeWait(o waitOutcome, asked time.Time) {
	im.wait[o].Observe(time.Since(asked).Seconds())
	im.checkouts[o].Inc()
}

// observeHold records a checkout held since granted.
func (im *ifaceMetrics) observeHold(granted time.Time) {
	im.hold.Observe(time.Since(granted).Seconds())
}

// observeSpawn records a worker that took d to become ready.
func (im *ifaceMetrics) observeSpawn(d time.Duration) { im.spawn.Observe(d.Seconds()) }

// observeCall records a call of method that ended with o; sent is when it was sent to the
// worker, zero for a call never sent (then only taskd_calls_total counts it).
func (im *ifaceMetrics) observeCall(method string, o callOutcome, sent time.Time) {
	ci := im.method(method).out[o].Load()
	if ci == nil {
		ci = im.resolve(method, o)
	}
	ci.count.Inc()
	if !sent.IsZero() {
		ci.dur.Observe(time.Since(sent).Seconds())
	}
}

// method returns the instruments of method, or of "other" past metrics_max_methods.
func (im *ifaceMetrics) method(method string) *methodMetrics {
	if v, ok := im.methods.Load(method); ok {
		return v.(*methodMetrics)
	}
	if im.n.Load() >= im.maxMethods.Load() {
		return im.other
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if v, ok := im.methods.Load(method); ok {
		return v.(*methodMetrics)
	}
	if im.n.Load() >= im.maxMethods.Load() {
		return im.other
	}
	mm := &methodMetrics{name: method}
	im.methods.Store(method, mm)
	im.n.Add(1)
	return mm
}

// resolve makes the children of (method, o), the first time they are used.
func (im *ifaceMetrics) resolve(method string, o callOutcome) *callInstruments {
	mm := im.method(method)
	labels := []string{im.name, mm.name, callOutcomeNames[o]}
	ci := &callInstruments{dur: im.m.callDur.WithLabelValues(labels...), count: im.m.calls.WithLabelValues(labels...)}
	if !mm.out[o].CompareAndSwap(nil, ci) {
		ci = mm.out[o].Load()
	}
	return ci
}

// waitOutcomeOf returns the outcome of a checkout request refused with code.
func waitOutcomeOf(code string) waitOutcome {
	if code == wire.CodeAbandoned {
		return waitAbandoned
	}
	return waitRefused
}

// callLatency returns the interface's call-duration histogram summed over its methods and
// outcomes: the cumulative count of calls at or under each of latencyBuckets, and the total.
// It reads the Prometheus children (a status request's cost, not the relay's); nil before
// the interface's first timed call.
func (im *ifaceMetrics) callLatency() *wire.LatencyHistogram {
	var h *wire.LatencyHistogram
	add := func(mm *methodMetrics) {
		for o := range mm.out {
			ci := mm.out[o].Load()
			if ci == nil {
				continue
			}
			var m dto.Metric
			if err := ci.dur.(prometheus.Metric).Write(&m); err != nil || m.Histogram == nil {
				continue
			}
			if h == nil {
				h = &wire.LatencyHistogram{Bounds: latencyBuckets, Counts: make([]uint64, len(latencyBuckets))}
			}
			for i, b := range m.Histogram.GetBucket() {
				if i < len(h.Counts) {
					h.Counts[i] += b.GetCumulativeCount()
				}
			}
			h.Total += m.Histogram.GetSampleCount()
		}
	}
	im.methods.Range(func(_, v any) bool {
		add(v.(*methodMetrics))
		return true
	})
	add(im.other)
	return h
}
