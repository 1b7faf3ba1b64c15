// Command webapp is a small web service that keeps notes in the "sqlite" example interface
// (examples/sqlite) through taskd: how an application uses pkg/client from HTTP handlers.
//
//	POST /notes {"author": "ann", "body": "hello"} → 201 {"id": 1, "author_notes": 1}
//	GET  /notes?author=ann                        → 200 [{"id": 1, "author": "ann", "body": "hello"}]
//
// Each POST takes one checkout (one worker, so one database connection), and runs a
// transaction over several calls on it: BEGIN, two writes, a read of what it wrote,
// COMMIT. If anything fails half way, releasing the checkout is enough: the worker's
// checkout-done hook rolls the transaction back. GET needs no transaction: it is one
// one-shot call (Client.Call).
//
// Errors are mapped to HTTP statuses by what they mean (see httpStatus): a constraint
// violation in the worker is 409, taskd being overloaded or unreachable is 503, a request
// deadline is 504, a lost worker is 502.
//
// Run it next to `make run` (which serves the sqlite interface):
//
//	go run ./examples/webapp -listen 127.0.0.1:8080
//	curl -d '{"author":"ann","body":"hello"}' localhost:8080/notes
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/pkg/client"
)

func main() {
	addr := flag.String("addr", "", "taskd address (unix:/path.sock or tcp://host:port); default $TASKD_ADDR, then taskd's default socket")
	listen := flag.String("listen", "127.0.0.1:8080", "address the HTTP server listens on")
	iface := flag.String("interface", "sqlite", "taskd interface serving the database")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each HTTP request's work")
	flag.Parse()

	log, err := zap.NewDevelopment()
	if err != nil {
		fmt.Fprintln(os.Stderr, "webapp:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *addr, *listen, *iface, *timeout); err != nil {
		log.Error("webapp failed", zap.Error(err))
		os.Exit(1)
	}
}

// run serves HTTP on listen until ctx is done.
func run(ctx context.Context, log *zap.Logger, addr, listen, iface string, timeout time.Duration) error {
	c, err := client.New(client.Config{
		Addr:      addr,
		Interface: iface,
		// The worker's checkout-done hook rolls back whatever a failed request left open,
		// so a worker whose call raised (a constraint violation, say) is fine to reuse.
		KeepWorkerAfterError: true,
		Logger:               log.Named("worker"), // the workers' log records (timers)
	})
	if err != nil {
		return err
	}
	defer c.Close()

	a := &app{c: c, log: log, timeout: timeout}
	if err := a.migrate(ctx); err != nil {
		return fmt.Errorf("creating the tables: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("listening", zap.String("addr", ln.Addr().String()), zap.String("taskd", c.Addr()))
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	<-done
	return err
}

// app holds what the handlers share: one Client for the whole process (it is safe for
// concurrent use and multiplexes every checkout over one connection).
type app struct {
	c       *client.Client
	log     *zap.Logger
	timeout time.Duration
}

const schema = `CREATE TABLE IF NOT EXISTS notes (
	id     INTEGER PRIMARY KEY,
	author TEXT NOT NULL,
	body   TEXT NOT NULL,
	UNIQUE (author, body))`

const authorsSchema = `CREATE TABLE IF NOT EXISTS authors (
	name  TEXT PRIMARY KEY,
	notes INTEGER NOT NULL)`

// migrate creates the tables. It waits for taskd (up to a.timeout per statement), so the
// web app may start before the daemon.
func (a *app) migrate(ctx context.Context) error {
	for _, stmt := range []string{schema, authorsSchema} {
		ctx, cancel := context.WithTimeout(ctx, a.timeout)
		err := a.c.Call(ctx, "execute", nil, stmt)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", a.addNote)
	mux.HandleFunc("GET /notes", a.listNotes)
	return mux
}

type note struct {
	ID     int64  `json:"id,omitempty"`
	Author string `json:"author"`
	Body   string `json:"body"`
}

// addNote inserts a note and bumps its author's count in one transaction, on one
// checkout.
func (a *app) addNote(w http.ResponseWriter, r *http.Request) {
	var n note
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&n); err != nil || n.Author == "" || n.Body == "" {
		http.Error(w, `want a JSON body {"author": "...", "body": "..."}`, http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()

	co, err := a.c.Checkout(ctx)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Release after a failure is the rollback: the worker's checkout-done hook does it.
	defer co.Release()

	var id, count int64
	err = func() error {
		if err := co.Call(ctx, "begin", nil); err != nil {
			return err
		}
		if err := co.Call(ctx, "execute", nil, "INSERT INTO notes (author, body) VALUES (?, ?)", []any{n.Author, n.Body}); err != nil {
			return err
		}
		// Same checkout, same connection: last_insert_rowid is this insert's.
		var rows []struct {
			ID int64 `json:"id"`
		}
		if err := co.Call(ctx, "query", &rows, "SELECT last_insert_rowid() AS id"); err != nil || len(rows) != 1 {
			return cmp.Or(err, errors.New("last_insert_rowid: no row"))
		}
		id = rows[0].ID
		if err := co.Call(ctx, "execute", nil,
			"INSERT INTO authors (name, notes) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET notes = notes + 1",
			[]any{n.Author}); err != nil {
			return err
		}
		var counts []struct {
			Notes int64 `json:"notes"`
		}
		if err := co.Call(ctx, "query", &counts, "SELECT notes FROM authors WHERE name = ?", []any{n.Author}); err != nil || len(counts) != 1 {
			return cmp.Or(err, errors.New("author count: no row"))
		}
		count = counts[0].Notes
		return co.Call(ctx, "commit", nil)
	}()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"id": id, "author_notes": count})
}

// listNotes returns an author's notes: one query, so a one-shot call.
func (a *app) listNotes(w http.ResponseWriter, r *http.Request) {
	author := r.URL.Query().Get("author")
	if author == "" {
		http.Error(w, "want ?author=NAME", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	notes := []note{}
	err := a.c.Call(ctx, "query", &notes, "SELECT id, author, body FROM notes WHERE author = ? ORDER BY id", []any{author})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, notes)
}

// fail answers a request that failed with err, with the status httpStatus chooses. Only
// server-side failures are logged.
func (a *app) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := httpStatus(err)
	if status >= 500 {
		a.log.Warn("request failed", zap.String("path", r.URL.Path), zap.Int("status", status), zap.Error(err))
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, status)
}

// httpStatus maps an error from pkg/client to an HTTP status and a message fit for the
// requester (no internals).
func httpStatus(err error) (int, string) {
	var re *client.RemoteError
	switch {
	case errors.As(err, &re) && re.Type == "IntegrityError":
		// A constraint of the schema said no: here, the same note twice.
		return http.StatusConflict, "conflict: " + re.Message
	case errors.As(err, &re):
		return http.StatusInternalServerError, "database error"
	case errors.Is(err, client.ErrOverloaded),
		errors.Is(err, client.ErrUnavailable),
		errors.Is(err, client.ErrUnreachable),
		errors.Is(err, client.ErrShuttingDown):
		return http.StatusServiceUnavailable, "the database is unavailable; try again"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "the database did not answer in time"
	case errors.Is(err, context.Canceled):
		return 499, "request cancelled" // nginx's "client closed request"; nobody reads it
	case errors.Is(err, client.ErrWorkerLost):
		return http.StatusBadGateway, "the database worker failed; try again"
	}
	return http.StatusInternalServerError, "internal error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
