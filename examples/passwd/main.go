// Command passwd is a taskd worker that hashes and verifies passwords with bcrypt: slow,
// CPU-bound work that taskd keeps off the application's threads (the first synopsis of
// Perl's AnyEvent::Task).
//
// Methods: "hash" PASSWORD returns a bcrypt hash; "verify" HASH PASSWORD returns whether
// they match. The cost comes from PASSWD_COST (default bcrypt.DefaultCost).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"

	"golang.org/x/crypto/bcrypt"

	"github.com/taskd-dev/taskd/pkg/worker"
)

func main() {
	cost := bcrypt.DefaultCost
	err := worker.Run(worker.Spec{
		Setup: func(context.Context) error {
			if v := os.Getenv("PASSWD_COST"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < bcrypt.MinCost || n > bcrypt.MaxCost {
					return fmt.Errorf("PASSWD_COST=%q: want a number from %d to %d", v, bcrypt.MinCost, bcrypt.MaxCost)
				}
				cost = n
			}
			return nil
		},
		Methods: map[string]worker.Func{
			"hash": func(_ context.Context, c *worker.Call) (any, error) {
				var password string
				if err := c.Args(&password); err != nil {
					return nil, err
				}
				hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
				if err != nil {
					return nil, &worker.Error{Type: "ValueError", Msg: err.Error()}
				}
				return string(hash), nil
			},
			"verify": func(_ context.Context, c *worker.Call) (any, error) {
				var hash, password string
				if err := c.Args(&hash, &password); err != nil {
					return nil, err
				}
				err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
				if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
					return false, nil
				} else if err != nil {
					return nil, &worker.Error{Type: "ValueError", Msg: err.Error()}
				}
				return true, nil
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
}
