package bench

import (
	"math/bits"
	"time"
)

// The histogram keeps 2^subBits buckets per power of two, so that a bucket is at most
// 1/128 (0.8%) of its value wide: good enough for percentiles, at a fixed 64 KiB.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets // bucketOf(2^64-1) is the last
)

// Histogram records latencies in log-linear buckets (relative error below 1%) in fixed
// memory, so that a long run needs no sample storage. The zero value is empty and ready to
// use. A Histogram is not safe for concurrent use: give each caller its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	max    time.Duration
}

func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // v>>shift is in [subBuckets, 2*subBuckets)
	return (shift+1)*subBuckets + int(v>>shift-subBuckets)
}

// bucketRange returns the smallest value of bucket i and the bucket's width.
func bucketRange(i int) (low, width uint64) {
	if i < subBuckets {
		return uint64(i), 1
	}
	shift := i/subBuckets - 1
	return (uint64(i%subBuckets) + subBuckets) << shift, 1 << shift
}

// Record adds one latency. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// Merge adds every latency recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count returns the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest latency recorded (exact).
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the latency below which a fraction q (0..1) of the recorded latencies
// lie: the middle of the bucket holding that rank, never more than Max (and Max itself for
// the highest rank). It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5) // the rank-th smallest, 1-based
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			return min(time.Duration(low+width/2), h.max)
		}
	}
	return h.max
}
