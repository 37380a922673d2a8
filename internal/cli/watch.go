package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// watchEventLine is one line of kayactl watch --json, and one event of
// kayactl cdc poll --json: the revision (seq), put or delete, the key and,
// for a put, the value.
type watchEventLine struct {
	Revision uint64 `json:"revision"`
	Type     string `json:"type"`
	keyField
	valueField
}

func eventLine(rev uint64, t client.EventType, k, v []byte) watchEventLine {
	l := watchEventLine{Revision: rev, Type: t.String(), keyField: makeKeyField(k)}
	if t == client.EventPut {
		l.valueField = makeValueField(v)
	}
	return l
}

// watchKeys is kayactl watch --prefix P | --key K: it prints every change
// as it is committed, until interrupted or --count events.
func (a *app) watchKeys(cmd *cobra.Command, prefix, key string, from uint64, count int) error {
	if err := a.needServer(cmd); err != nil {
		return err
	}
	pf, kf := cmd.Flags().Changed("prefix"), cmd.Flags().Changed("key")
	if pf == kf {
		return usageErrorf("watch needs exactly one of --prefix P or --key K (or the word status)")
	}
	if count < 0 {
		return usageErrorf("--count must not be negative")
	}
	opts, err := a.clientOptions()
	if err != nil {
		return err
	}
	c, err := client.New(a.servers(), opts)
	if err != nil {
		return usageErrorf("--server: %v", err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	target := []byte(prefix)
	wopts := []client.WatchOption{client.WithStartRevision(from)}
	if kf {
		target = []byte(key)
		wopts = append(wopts, client.WithKey())
	}
	n := 0
	for r := range c.Watch(ctx, target, wopts...) {
		if r.Err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return r.Err
		}
		for _, e := range r.Events {
			if a.json {
				if err := writeJSON(a.stdout, eventLine(e.Revision, e.Type, e.Key, e.Value)); err != nil {
					return err
				}
			} else if e.Type == client.EventPut {
				fmt.Fprintf(a.stdout, "%d\tput\t%s\t%s\n", e.Revision, formatBytes(e.Key), formatBytes(e.Value))
			} else {
				fmt.Fprintf(a.stdout, "%d\tdelete\t%s\n", e.Revision, formatBytes(e.Key))
			}
			n++
			if count > 0 && n >= count {
				return nil
			}
		}
	}
	return nil
}

// cdcPollResult is kayactl cdc poll --json's output.
type cdcPollResult struct {
	Events []watchEventLine `json:"events"`
	// LastSeq is the seq to poll from next (--from): the last event's, or
	// --from when there was none.
	LastSeq uint64 `json:"last_seq"`
}

func (a *app) newCDCCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cdc",
		Short: "Change data capture: poll a consumer's changes, store and read its position",
		Long: `The cluster's change feed (CDC_POLL and CDC_CHECKPOINT, the original's
opcodes 13 and 14). A seq is the commit revision of a change: the same on
every node and after any failover; the changes of one transaction share
one. A consumer name is 1 to 64 of [A-Za-z0-9_-]. A consumer with a stored
position holds the history after it (within the server's --cdc-retention).`,
	}
	poll := &cobra.Command{
		Use:   "poll CONSUMER [--from SEQ] [--limit N]",
		Short: "Print the changes after seq --from (0: the oldest retained), in commit order",
		Long: `Print the changes after seq --from (exclusive; 0: the oldest retained), at
most --limit (the server caps a reply at 10,000 and about 4 MiB, and never
splits a commit), one "SEQ<TAB>put|delete<TAB>KEY[<TAB>VALUE]" line each;
--json prints {"events":[{"revision","type","key","value"}...],"last_seq"}.
Poll again from the last seq printed.`,
		Args: exactArgs(1, "CONSUMER"),
	}
	from := poll.Flags().Uint64("from", 0, "poll the changes after this seq (0: from the oldest retained)")
	limit := poll.Flags().Uint32("limit", 1000, "the most changes to return")
	poll.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withCDC(cmd, func(ctx context.Context, c *client.Client) error {
			evs, err := c.CDCPoll(ctx, args[0], *from, *limit)
			if err != nil {
				return err
			}
			res := cdcPollResult{Events: []watchEventLine{}, LastSeq: *from}
			for _, e := range evs {
				res.LastSeq = e.Seq
				if a.json {
					res.Events = append(res.Events, eventLine(e.Seq, e.Type, e.Key, e.Value))
				} else if e.Type == client.EventPut {
					fmt.Fprintf(a.stdout, "%d\tput\t%s\t%s\n", e.Seq, formatBytes(e.Key), formatBytes(e.Value))
				} else {
					fmt.Fprintf(a.stdout, "%d\tdelete\t%s\n", e.Seq, formatBytes(e.Key))
				}
			}
			if a.json {
				return writeJSON(a.stdout, res)
			}
			return nil
		})
	})
	checkpoint := &cobra.Command{
		Use:   "checkpoint CONSUMER [--seq SEQ]",
		Short: "Store the consumer's position (replicated through raft)",
		Long: `Store the consumer's position through raft: --seq SEQ, the last seq it
processed; without --seq, the original's checkpoint: the last seq the
leader sent this consumer in a poll (an error if it sent none since it was
elected).`,
		Args: exactArgs(1, "CONSUMER"),
	}
	seq := checkpoint.Flags().Uint64("seq", 0, "the position to store (the last seq processed)")
	checkpoint.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withCDC(cmd, func(ctx context.Context, c *client.Client) error {
			var err error
			if cmd.Flags().Changed("seq") {
				err = c.CDCCheckpoint(ctx, args[0], *seq)
			} else {
				err = c.CDCCheckpointLast(ctx, args[0])
			}
			if err != nil {
				return err
			}
			return a.printOK()
		})
	})
	position := &cobra.Command{
		Use:   "position CONSUMER",
		Short: "Print the consumer's stored position (exit 2 when it has none)",
		Args:  exactArgs(1, "CONSUMER"),
	}
	position.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withCDC(cmd, func(ctx context.Context, c *client.Client) error {
			p, err := c.CDCPosition(ctx, args[0])
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(a.stdout, map[string]uint64{"seq": p})
			}
			_, err = fmt.Fprintf(a.stdout, "%d\n", p)
			return err
		})
	})
	del := &cobra.Command{
		Use:   "delete CONSUMER",
		Short: "Delete the consumer: its position no longer holds history",
		Args:  exactArgs(1, "CONSUMER"),
	}
	del.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withCDC(cmd, func(ctx context.Context, c *client.Client) error {
			if err := c.CDCDelete(ctx, args[0]); err != nil {
				return err
			}
			return a.printOK()
		})
	})
	cmd.AddCommand(poll, checkpoint, position, del)
	return cmd
}

func (a *app) withCDC(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	if err := a.needServer(cmd); err != nil {
		return err
	}
	c, ctx, cancel, err := a.newClient()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	return fn(ctx, c)
}

func (a *app) printOK() error {
	if a.json {
		return writeJSON(a.stdout, map[string]bool{"ok": true})
	}
	_, err := fmt.Fprintln(a.stdout, "OK")
	return err
}
