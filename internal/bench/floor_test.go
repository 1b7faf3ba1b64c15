package bench

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// The minimal worker answers calls with their arguments, one line per call, and exits on
// EOF: as a pipe worker of the suite, with calls of both payloads.
func TestMinimalWorker(t *testing.T) {
	w, err := startPipeWorker(taskdtest.Binary(t, "internal/taskdtest/leaseworker"), 10*time.Second)
	require.NoError(t, err)
	for _, p := range []string{smallPayload, largePayload, strings.Repeat("x", 200<<10)} {
		args, _ := json.Marshal([]string{p})
		require.NoError(t, w.Call("echo", args))
	}
	require.NoError(t, w.Close(), "exits 0 on EOF")
}

// Lines that arrive together are all answered, in order; a line that is not a protocol
// message ends the worker with an error.
func TestMinimalWorkerBatchAndBadInput(t *testing.T) {
	bin := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	cmd := exec.Command(bin)
	cmd.Stdin = strings.NewReader(`{"t":"call","id":1,"m":"echo","a":[1]}` + "\n" + `{"t":"done"}` + "\n" +
		`{"t":"call","id":2,"a":["b"]}` + "\n" + `{"t":"cancel","id":2}` + "\n")
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, `{"t":"ready","v":1}`+"\n"+`{"t":"ok","id":1,"r":[1]}`+"\n"+`{"t":"ok","id":2,"r":["b"]}`+"\n", string(out))

	cmd = exec.Command(bin)
	cmd.Stdin = strings.NewReader("not json\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	require.Error(t, err)
	assert.Contains(t, stderr.String(), "minimal: line")
}
