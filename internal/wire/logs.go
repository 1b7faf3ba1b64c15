package wire

import "encoding/json"

// LogLine is one stderr line of a worker as taskd logged it (after stderr_line_max and
// the rate limit), as a logs answer carries it.
type LogLine struct {
	TS     float64 `json:"ts"`     // when taskd read it: Unix seconds with a fraction
	Iface  string  `json:"iface"`  // the worker's interface
	Worker string  `json:"worker"` // the worker's id, e.g. "passwd-3"
	PID    int     `json:"pid"`
	Line   string  `json:"line"`
}

// decodeLogLines decodes the lines of a logs answer (with encoding/json: not a hot path).
// It is a function of its own so that the slice, not the whole ClientMsg, escapes.
func decodeLogLines(val []byte) ([]LogLine, error) {
	if string(val) == "null" {
		return nil, nil
	}
	var lines []LogLine
	err := json.Unmarshal(val, &lines)
	return lines, err
}
