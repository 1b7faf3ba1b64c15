//go:build !unix

package worker

import (
	"errors"
	"os"
)

type rawFD = os.File

func takeStdio() (in, out *rawFD, err error) {
	return nil, nil, errors.New("worker: Run needs a unix system (it moves the protocol off stdin and stdout with dup2)")
}
