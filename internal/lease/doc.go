// Package lease holds the pieces of the direct-lease extension of worker protocol v1
// (docs/worker-protocol.md, "Direct leases") that taskd, pkg/client and lease-speaking
// workers share:
//
//   - the control channel's codec (control.go): one JSON object per SOCK_SEQPACKET packet,
//     with at most one descriptor riding on it (SCM_RIGHTS), and the socketpairs and
//     memfd that taskd makes for a worker and for each lease;
//   - the stats page (page.go): the 4096-byte shared-memory page a worker publishes its
//     calls in, written with a seqlock and read by taskd without a system call;
//   - the receiving side of descriptors passed on a byte stream (fdreader.go), which the
//     client's connection reader uses to take the socketpair end that rides on a direct
//     grant.
//
// It does framing and layout only: no goroutines, no policy (who sends what when is the
// caller's). Every function is safe for concurrent use unless its type says otherwise.
package lease
