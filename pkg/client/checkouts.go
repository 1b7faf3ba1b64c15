package client

import (
	"context"
	"encoding/json"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// CheckoutInfo describes one checkout that a client of taskd holds now (Client.Checkouts):
// which worker, who holds it, for how long, and what runs on it. It is a plain value,
// owned by the caller.
//
// Its JSON form, which `taskctl checkouts -o json` prints, carries durations as seconds
// with a fraction: held_sec and call_sec.
type CheckoutInfo struct {
	ID        uint64 `json:"co"` // the checkout's id, unique for the daemon's lifetime
	Interface string `json:"interface"`
	Worker    string `json:"worker"` // the worker's id, as in InterfaceStatus.Workers
	PID       int    `json:"pid"`    // the worker's process id
	Holder    Holder `json:"holder"`
	// Once marks a one-shot call (Client.Call): taskd holds the checkout for the call
	// alone and ends it with the answer.
	Once bool `json:"once,omitempty"`
	// Direct marks a direct lease: its calls go to the worker over a socketpair, and
	// taskd counts them (Calls) and sees the running one (Method) in the worker's stats
	// page.
	Direct bool `json:"direct,omitempty"`
	// Warm marks a warm lease (Config.WarmFor): a direct lease that a Client keeps for
	// its one-shot calls, and gives back when taskd reclaims it.
	Warm  bool          `json:"warm,omitempty"`
	Held  time.Duration `json:"-"`     // since taskd granted it
	Calls uint64        `json:"calls"` // calls made on it so far
	// Method is the method of the call running now ("" for a function-style call), and
	// CallRunning how long it has run; both zero when no call runs.
	Method      string        `json:"method,omitempty"`
	CallRunning time.Duration `json:"-"`
	// Warn: held longer than the interface's checkout_warn_after (which taskd logged).
	Warn bool `json:"warn,omitempty"`
}

// Holder is the client connection that holds a checkout: the name the application gave
// (Config.Name, which defaults to its program's name), and what the kernel says of the
// process at the other end of a unix socket, or the address of a TCP connection.
type Holder struct {
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid,omitempty"`  // 0 if unknown (TCP)
	UID  int    `json:"uid"`            // -1 if unknown (TCP)
	GID  int    `json:"gid"`            // -1 if unknown (TCP)
	Comm string `json:"comm,omitempty"` // the process's name as the kernel knows it
	Addr string `json:"addr,omitempty"` // the remote address of a TCP connection
	// TLSNames are the SAN DNS names and URIs (such as SPIFFE IDs) of the client
	// certificate that taskd verified, for a connection to a tls:// address with client
	// certificates required (taskd's tls.client_ca_file); nil otherwise.
	TLSNames []string `json:"tls_names,omitempty"`
}

// Checkouts asks taskd who holds which worker: the checkouts held now by all its clients,
// of interface iface ("" for all), sorted by interface and id. An iface that taskd does
// not serve gives an error matching ErrUnknownInterface. Like Ping it fails at once if
// taskd cannot be dialled. A taskd older than this client does not answer; the request
// then fails at its deadline.
func (c *Client) Checkouts(ctx context.Context, iface string) ([]CheckoutInfo, error) {
	m, _, err := c.admin(ctx, adminOp{t: wire.TCheckouts, iface: iface, timeout: c.timeout,
		slow: "a taskd older than this client does not answer checkouts"})
	if err != nil {
		return nil, err
	}
	return checkoutsFromWire(m.Checkouts), nil
}

// checkoutsFromWire converts the checkouts report as taskd sends it: the one place where
// the client protocol's CheckoutInfo becomes this package's.
func checkoutsFromWire(ws []wire.CheckoutInfo) []CheckoutInfo {
	list := make([]CheckoutInfo, 0, len(ws))
	for _, w := range ws {
		list = append(list, CheckoutInfo{ID: w.Co, Interface: w.Interface, Worker: w.Worker, PID: w.PID,
			Holder: Holder{Name: w.Holder.Name, PID: w.Holder.PID, UID: w.Holder.UID, GID: w.Holder.GID,
				Comm: w.Holder.Comm, Addr: w.Holder.Addr, TLSNames: w.Holder.TLSNames},
			Once: w.Once, Direct: w.Direct, Warm: w.Warm, Held: seconds(w.HeldSec), Calls: w.Calls, Method: w.Method,
			CallRunning: seconds(w.CallSec), Warn: w.Warn})
	}
	return list
}

// MarshalJSON encodes ci with Held as "held_sec" and CallRunning as "call_sec".
func (ci CheckoutInfo) MarshalJSON() ([]byte, error) {
	type plain CheckoutInfo
	return json.Marshal(struct {
		plain
		HeldSec float64 `json:"held_sec"`
		CallSec float64 `json:"call_sec,omitempty"`
	}{plain(ci), ci.Held.Seconds(), ci.CallRunning.Seconds()})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (ci *CheckoutInfo) UnmarshalJSON(b []byte) error {
	type plain CheckoutInfo
	v := struct {
		*plain
		HeldSec float64 `json:"held_sec"`
		CallSec float64 `json:"call_sec"`
	}{plain: (*plain)(ci)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	ci.Held, ci.CallRunning = seconds(v.HeldSec), seconds(v.CallSec)
	return nil
}
