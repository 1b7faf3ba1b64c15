package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRelayAllocatesNothing: in the steady state of a held checkout, relaying a call and
// its answer costs the daemon no allocation. The server runs in this process and the test
// speaks the client protocol on a bare socket with preallocated buffers, so every
// allocation counted is the daemon's.
func TestRelayAllocatesNothing(t *testing.T) {
	addr := startInProcess(t, 1)
	conn, err := net.Dial("unix", strings.TrimPrefix(addr, "unix:"))
	require.NoError(t, err)
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	_, err = conn.Write([]byte(`{"t":"checkout","id":1,"iface":"echo"}` + "\n"))
	require.NoError(t, err)
	line, err := r.ReadSlice('\n')
	require.NoError(t, err)
	require.Contains(t, string(line), `"t":"granted"`)
	var co int
	_, err = fmt.Sscanf(string(line[bytes.Index(line, []byte(`"co":`)):]), `"co":%d`, &co)
	require.NoError(t, err)

	call := []byte(fmt.Sprintf(`{"t":"call","co":%d,"id":7,"m":"echo","a":["01234567890123456789012345678901234567890123456789"]}`+"\n", co))
	want := []byte(`"t":"ok"`)
	roundTrip := func() {
		if _, err := conn.Write(call); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadSlice('\n')
		if err != nil || !bytes.Contains(line, want) {
			t.Fatalf("answer %q, %v", line, err)
		}
	}
	for range 100 { // warm up: buffers and maps reach their steady size
		roundTrip()
	}
	assert.Zero(t, testing.AllocsPerRun(500, roundTrip), "allocations per relayed call")
}
