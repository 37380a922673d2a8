package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kayadb/kayadb/client"
)

func Example() {
	c, err := client.New([]string{"10.0.0.1:7379", "10.0.0.2:7379", "10.0.0.3:7379"}, &client.Options{
		ClientToken: os.Getenv("KAYA_CLIENT_TOKEN"), // "" = the cluster has no client token
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()

	err = c.Put(ctx, []byte("user:1"), []byte("Ada"))
	switch {
	case errors.Is(err, client.ErrAmbiguous):
		// Sent, but no reply: it may have been applied. Read it back (or
		// make the write idempotent) before trying again.
	case err != nil:
		log.Fatal(err)
	}

	v, err := c.Get(ctx, []byte("user:1"))
	switch {
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("absent")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("user:1 = %s (leader %s)\n", v, c.Leader())
	}

	kvs, err := c.Scan(ctx, []byte("user:"))
	if err != nil {
		log.Fatal(err)
	}
	for _, kv := range kvs {
		fmt.Printf("%s = %s\n", kv.Key, kv.Value)
	}
}
