package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// txnOpResult is one op's result in kayactl txn --json.
type txnOpResult struct {
	Op string `json:"op"` // get, put, delete
	keyField
	// Found is set for a get: whether the key exists.
	Found *bool `json:"found,omitempty"`
	// Deleted is set for a delete: whether the key existed.
	Deleted *bool `json:"deleted,omitempty"`
	valueField
	ModRevision uint64 `json:"mod_revision,omitempty"`
}

// txnResult is kayactl txn --json's output.
type txnResult struct {
	Succeeded bool          `json:"succeeded"`
	Revision  uint64        `json:"revision"`
	Results   []txnOpResult `json:"results"`
}

func (a *app) newTxnCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "txn [--file FILE]",
		Short: "Run a conditional write (compares, then ops, else ops) read from stdin or a file, as etcdctl txn",
		Long: `Read a conditional write from standard input (or --file FILE) in etcdctl's
txn syntax and run it atomically on the cluster: if every compare holds the
success ops run, else the failure ops, in one raft entry.

  mod("config") = "1234"
  value("lock") = "free"

  put lock mine
  get config

  get lock

Compares, a blank line, success ops, a blank line, failure ops (the end of
the input ends the last section). Compares: value("K") OP "V", mod("K") OP N,
exists("K"), !exists("K"), and create("K")/version("K") against 0 only
(= "0": the key does not exist); OP is =, !=, <, >, <=, >=. Ops: put K V,
get K, del K; words with spaces in double quotes (Go escapes) or single
quotes. Lines starting with # are comments.

The output is etcdctl's: SUCCESS or FAILURE, then for each op of the branch
that ran a blank line and its result (put: OK; del: 1 or 0, the keys
deleted; get: the key and the value on two lines, nothing when absent).
--json adds the commit revision and each get's mod revision. The exit
status is 0 for SUCCESS and FAILURE alike.`,
		Args: exactArgs(0, "no arguments (the transaction is read from stdin or --file FILE)"),
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the transaction from FILE instead of standard input")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := a.needServer(cmd); err != nil {
			return err
		}
		in, what := a.stdin, "stdin"
		if file != "" {
			f, err := os.Open(file)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return usageErrorf("--file %s: no such file", file)
				}
				return err
			}
			defer f.Close()
			in, what = f, file
		}
		spec, err := parseTxn(in)
		if err != nil {
			return usageErrorf("reading the transaction from %s: %v", what, err)
		}
		c, ctx, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		resp, err := c.Txn(ctx).If(spec.cmps...).Then(spec.then...).Else(spec.els...).Commit()
		if err != nil {
			return err
		}
		if a.json {
			return writeJSON(a.stdout, makeTxnResult(resp))
		}
		return writeTxnHuman(a.stdout, resp)
	})
	return cmd
}

func makeTxnResult(resp *client.TxnResponse) txnResult {
	res := txnResult{Succeeded: resp.Succeeded, Revision: resp.Revision, Results: []txnOpResult{}}
	for _, r := range resp.Results {
		o := txnOpResult{Op: r.Kind.String(), keyField: makeKeyField(r.Key)}
		found := r.Found
		switch r.Kind {
		case client.KindGet:
			o.Found = &found
			if found {
				o.valueField, o.ModRevision = makeValueField(r.Value), r.ModRevision
			}
		case client.KindDelete:
			o.Deleted = &found
		}
		res.Results = append(res.Results, o)
	}
	return res
}

// writeTxnHuman prints a txn's outcome as etcdctl does, in one write.
func writeTxnHuman(w io.Writer, resp *client.TxnResponse) error {
	var b bytes.Buffer
	if resp.Succeeded {
		b.WriteString("SUCCESS\n")
	} else {
		b.WriteString("FAILURE\n")
	}
	for _, r := range resp.Results {
		b.WriteString("\n")
		switch r.Kind {
		case client.KindPut:
			b.WriteString("OK\n")
		case client.KindDelete:
			if r.Found {
				b.WriteString("1\n")
			} else {
				b.WriteString("0\n")
			}
		case client.KindGet:
			if r.Found {
				b.Write(r.Key)
				b.WriteString("\n")
				b.Write(r.Value)
				b.WriteString("\n")
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// casResult is kayactl cas --json's output.
type casResult struct {
	Swapped bool `json:"swapped"`
	// Revision is the write's revision when swapped, else the key's mod
	// revision (0: the key does not exist).
	Revision uint64 `json:"revision"`
	// Exists and the value are set when it did not swap: whether the key
	// exists, and its current value.
	Exists *bool `json:"exists,omitempty"`
	valueField
}

func (a *app) newCasCmd() *cobra.Command {
	var h hexArgs
	cmd := &cobra.Command{
		Use:   "cas KEY OLD NEW",
		Short: "Compare-and-swap: store NEW under KEY only if its value is OLD (exit 7 when it is not)",
		Long: `Store NEW under KEY if and only if KEY's current value is OLD, atomically
(a conditional write). Prints "OK revision=R" (the write's revision) when it
swapped. When the value differs or KEY does not exist, it writes nothing,
says so on stderr with the current value and mod revision, and exits with
status 7 (--json: {"swapped":false,...} on stdout). A missing key never
matches: to create a key only if it is absent, use kayactl txn with
!exists("KEY").`,
		Args: exactArgs(3, "KEY, OLD and NEW"),
	}
	h.register(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := a.needServer(cmd); err != nil {
			return err
		}
		var kvs [3][]byte
		for i, what := range []string{"KEY", "OLD", "NEW"} {
			b, err := h.decode(what, args[i])
			if err != nil {
				return err
			}
			kvs[i] = b
		}
		key, old, new := kvs[0], kvs[1], kvs[2]
		c, ctx, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		resp, err := c.Txn(ctx).If(client.CompareValue(key, client.Equal, old)).Then(client.OpPut(key, new)).Else(client.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			if a.json {
				return writeJSON(a.stdout, casResult{Swapped: true, Revision: resp.Revision})
			}
			_, err := fmt.Fprintf(a.stdout, "OK revision=%d\n", resp.Revision)
			return err
		}
		cur := resp.Results[0]
		res := casResult{Revision: cur.ModRevision, Exists: &cur.Found}
		msg := fmt.Sprintf("not swapped: %s does not exist", quoteForMessage(key))
		if cur.Found {
			res.valueField = makeValueField(cur.Value)
			msg = fmt.Sprintf("not swapped: the value of %s is %s, not %s (mod revision %d)",
				quoteForMessage(key), quoteForMessage(cur.Value), quoteForMessage(old), cur.ModRevision)
		}
		ce := &cliError{code: ExitCompareFailed, err: errors.New(msg)}
		if a.json {
			ce.quiet = true
			if err := writeJSON(a.stdout, res); err != nil {
				return err
			}
		}
		return ce
	})
	return cmd
}
