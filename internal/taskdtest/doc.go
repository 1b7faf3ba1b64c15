// Package taskdtest runs real taskd daemons and real worker processes for tests, the way
// net/http/httptest runs real servers.
//
// A package that uses it has `func TestMain(m *testing.M) { taskdtest.Main(m) }`. Binary
// builds a binary of this checkout (once per test process) into a scratch directory of the
// process in the temporary directory. Start writes a config into a fresh directory inside
// it and starts the daemon (through internal/taskdproc, the launcher the benchmark uses
// too) on a private unix socket, and waits for the daemon's systemd READY=1 notification on
// a private notify socket. When the test ends, the daemon is stopped with SIGTERM, the test
// fails if any of its worker processes outlives it, and its directory is removed. When the
// tests end, Main removes the scratch directory, so that a test run leaves nothing in the
// temporary directory; a test process that died without removing its own is cleaned up by
// the next one.
//
// Worker modes: a test package whose TestMain is Main (or calls MaybeRunWorker first) can
// use its own test binary as a worker process (WorkerYAML), in modes that behave well or
// badly on purpose (crash, hang, print garbage, never get ready...), as os/exec's tests do.
//
// TLS: NewCA makes a certificate authority at test time, and CA.Issue server and client
// certificates of it (SAN DNS names, IPs and URIs such as SPIFFE IDs), as PEM files in the
// test's temp dir, for a daemon's tls key and a client's tls.Config (ClientTLS). No
// certificate is committed.
//
// Nothing here is safe for use outside tests. Binary, Start and the other functions are
// safe for concurrent use by parallel tests.
package taskdtest
