package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
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

// RunTxn moves 10 units between two accounts atomically, starting again
// when another transaction got in the way. (Examples without an Output
// comment are compiled, not run: they need a cluster.)
func ExampleClient_RunTxn() {
	c, err := client.New([]string{"127.0.0.1:7379"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	balance := func(tx *client.Txn, key string) (int, error) {
		v, err := tx.Get(ctx, []byte(key))
		if errors.Is(err, client.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(string(v))
	}
	rev, err := c.RunTxn(ctx, func(tx *client.Txn) error {
		from, err := balance(tx, "account:alice")
		if err != nil {
			return err
		}
		to, err := balance(tx, "account:bob")
		if err != nil {
			return err
		}
		if from < 10 {
			return errors.New("insufficient funds") // rolled back, not retried
		}
		if err := tx.Put(ctx, []byte("account:alice"), strconv.AppendInt(nil, int64(from-10), 10)); err != nil {
			return err
		}
		return tx.Put(ctx, []byte("account:bob"), strconv.AppendInt(nil, int64(to+10), 10))
	})
	switch {
	case errors.Is(err, client.ErrTxnConflict):
		// Still conflicting after Options.MaxTxnAttempts runs.
	case errors.Is(err, client.ErrAmbiguous):
		// The commit's reply was lost and its outcome could not be
		// learned: read the accounts to find out.
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("transferred at revision", rev)
}

// Begin gives full control: the transaction is bound to the leader it
// began on, and must end with Commit or Rollback.
func ExampleClient_Begin() {
	c, err := client.New([]string{"127.0.0.1:7379"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	tx, err := c.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if err := tx.Put(ctx, []byte("a"), []byte("1")); err != nil {
		log.Fatal(err) // ErrTxnConflict or ErrTxnLost: start again
	}
	if err := tx.Delete(ctx, []byte("b")); err != nil {
		log.Fatal(err)
	}
	rev, err := tx.Commit(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed at revision", rev)
}

// A conditional write in etcd's style: take a lock unless someone holds
// it, and say who does.
func ExampleClient_Txn() {
	c, err := client.New([]string{"127.0.0.1:7379"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	lock := []byte("locks/report")
	resp, err := c.Txn(ctx).
		If(client.KeyMissing(lock)).
		Then(client.OpPut(lock, []byte("worker-7"))).
		Else(client.OpGet(lock)).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	if resp.Succeeded {
		fmt.Println("locked at revision", resp.Revision)
	} else {
		fmt.Printf("held by %s since revision %d\n", resp.Results[0].Value, resp.Results[0].ModRevision)
	}
}

// CompareAndSwap and an optimistic update with CompareModRevision.
func ExampleClient_CompareAndSwap() {
	c, err := client.New([]string{"127.0.0.1:7379"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	swapped, rev, err := c.CompareAndSwap(ctx, []byte("config/mode"), []byte("blue"), []byte("green"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(swapped, rev)

	// Read, compute, write back only if nobody wrote in between.
	v, modRev, err := c.GetWithRevision(ctx, []byte("config/mode"))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := c.Txn(ctx).
		If(client.CompareModRevision([]byte("config/mode"), client.Equal, modRev)).
		Then(client.OpPut([]byte("config/mode"), append(v, "-2"...))).
		Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Succeeded)
}

// Reads at a past revision, and a whole prefix read page by page at one
// revision.
func ExampleWithReadAt() {
	c, err := client.New([]string{"127.0.0.1:7379"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	_, rev, err := c.PutIfAbsent(ctx, []byte("k"), []byte("first"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Put(ctx, []byte("k"), []byte("second")); err != nil {
		log.Fatal(err)
	}
	v, err := c.Get(ctx, []byte("k"), client.WithReadAt(rev))
	switch {
	case errors.Is(err, client.ErrCompacted):
		var ce *client.CompactedError
		errors.As(err, &ce)
		fmt.Println("too old; the oldest readable revision is", ce.Oldest)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("k was %q at revision %d\n", v, rev)
	}

	page, err := c.ScanPage(ctx, []byte("user:"), nil, 1000)
	for err == nil {
		for _, kv := range page.KVs {
			fmt.Printf("%s = %s (revision %d)\n", kv.Key, kv.Value, kv.ModRevision)
		}
		if !page.More {
			break
		}
		page, err = c.ScanPage(ctx, []byte("user:"), page.Next, 1000, client.WithReadAt(page.Revision))
	}
	if err != nil {
		log.Fatal(err)
	}
}
