//go:build !unix

package worker

import (
	"errors"
	"os"
)

func takeStdio() (in, out *os.File, err error) {
	return nil, nil, errors.New("worker: Run needs a unix system (it moves the protocol off stdin and stdout with dup2)")
}
