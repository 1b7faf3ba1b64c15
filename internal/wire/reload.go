package wire

// The answer to the client protocol's "reload" admin request (client.go has the message
// that carries it).

// ReloadReport is taskd's answer to a reload that it applied: what changed, per interface,
// the top-level keys that changed and were applied, and those that take effect only at
// the next restart.
type ReloadReport struct {
	Interfaces   []InterfaceChange `json:"interfaces"`              // sorted by name, the removed ones included
	Live         []string          `json:"live,omitempty"`          // changed top-level keys applied in place, such as "admin"
	NeedsRestart []string          `json:"needs_restart,omitempty"` // changed keys a reload does not apply, such as "listen"
}

// How a reload changed an interface (InterfaceChange.Change).
const (
	ChangeAdded         = "added"          // new: its workers are starting
	ChangeRemoved       = "removed"        // refuses new checkouts; held ones finish, then its workers stop
	ChangeResized       = "resized"        // pool keys changed and apply in place; no worker restarted
	ChangeAccess        = "access_changed" // only allow changed: applies to the next request of every connection; no worker touched
	ChangeNewGeneration = "new_generation" // command, dir or env changed: new workers took over, old ones retire as their checkouts end
	ChangeUnchanged     = "unchanged"
	ChangeFailed        = "failed" // the new generation could not start; the old one keeps serving, with the old command, dir and env
)

// InterfaceChange is what a reload did to one interface.
type InterfaceChange struct {
	Name       string   `json:"name"`
	Change     string   `json:"change"`               // one of the Change* constants
	Keys       []string `json:"keys,omitempty"`       // the keys that changed, such as "max_workers", "env"
	Generation int      `json:"generation,omitempty"` // the interface's generation after the reload
	Error      string   `json:"error,omitempty"`      // for ChangeFailed: why the new generation did not start
}
