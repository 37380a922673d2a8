package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/engine"
)

// exactArgs is cobra.ExactArgs with a message naming the arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s (got %d %s)", cmd.CommandPath(), names, len(args), pluralWord(len(args), "argument"))
		}
		return nil
	}
}

func pluralWord(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// hexArgs is the --hex flag of the key-value commands.
type hexArgs struct{ on bool }

func (h *hexArgs) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&h.on, "hex", false, "KEY, VALUE, PREFIX (and --start/--end) arguments are hex-encoded bytes")
}

// decode turns a command-line argument into bytes.
func (h *hexArgs) decode(what, s string) ([]byte, error) {
	if !h.on {
		return []byte(s), nil
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil {
		return nil, usageErrorf("%s %q is not valid hex: %v", what, s, err)
	}
	return b, nil
}

type okResult struct {
	OK bool `json:"ok"`
}

type putResult struct {
	OK       bool   `json:"ok"`
	Sequence uint64 `json:"sequence"`
}

func (a *app) newPutCmd() *cobra.Command {
	var h hexArgs
	var valueFile string
	cmd := &cobra.Command{
		Use:   "put KEY VALUE | put KEY - | put KEY --value-file FILE",
		Short: "Store VALUE (or stdin with -, or a file's bytes) under KEY",
		Long: `Store VALUE under KEY. With - as VALUE the value is read from standard
input, with --value-file FILE from that file: the bytes exactly as they are
(a trailing newline included; --hex applies to arguments only), at most
16 MiB. In local mode put creates the database if --data holds none.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if valueFile != "" {
				return exactArgs(1, "KEY (the value comes from --value-file)")(cmd, args)
			}
			return exactArgs(2, "KEY and VALUE (or - to read the value from stdin, or --value-file FILE)")(cmd, args)
		},
	}
	h.register(cmd)
	cmd.Flags().StringVar(&valueFile, "value-file", "", "read the value from FILE (its bytes as they are) instead of the VALUE argument")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		key, err := h.decode("KEY", args[0])
		if err != nil {
			return err
		}
		var value []byte
		switch {
		case valueFile != "":
			if value, err = readValue("--value-file "+valueFile, func() (io.ReadCloser, error) { return os.Open(valueFile) }); err != nil {
				return err
			}
		case args[1] == "-":
			if value, err = readValue("stdin", func() (io.ReadCloser, error) { return io.NopCloser(a.stdin), nil }); err != nil {
				return err
			}
		default:
			if value, err = h.decode("VALUE", args[1]); err != nil {
				return err
			}
		}
		return a.withBackend(mayCreate, func(b kvBackend) error {
			seq, err := b.Put(key, value)
			if err != nil {
				return err
			}
			if a.serverMode() {
				// The cluster does not expose engine sequence numbers.
				if a.json {
					return writeJSON(a.stdout, okResult{OK: true})
				}
				_, err = fmt.Fprintln(a.stdout, "OK")
				return err
			}
			if a.json {
				return writeJSON(a.stdout, putResult{OK: true, Sequence: seq})
			}
			_, err = fmt.Fprintf(a.stdout, "OK sequence=%d\n", seq)
			return err
		})
	})
	return cmd
}

// readValue reads a value of at most engine.MaxValueSize bytes (the
// limit of both modes, so a larger input is refused before it is held in
// memory whole).
func readValue(what string, open func() (io.ReadCloser, error)) ([]byte, error) {
	r, err := open()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usageErrorf("%s: no such file", what)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer r.Close()
	v, err := io.ReadAll(io.LimitReader(r, engine.MaxValueSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the value from %s: %w", what, err)
	}
	if len(v) > engine.MaxValueSize {
		return nil, usageErrorf("the value from %s is larger than the %d-byte (16 MiB) limit", what, engine.MaxValueSize)
	}
	return v, nil
}

type getResult struct {
	Found bool `json:"found"`
	keyField
	valueField
	// ModRevision is set with --at-revision: the revision of the write
	// that gave the key its value.
	ModRevision *uint64 `json:"mod_revision,omitempty"`
}

// revisionReader is what get and scan --at-revision need: a backend that
// reads at a revision (server mode; the engine of local mode keeps only
// the latest values).
type revisionReader interface {
	// GetAt returns key's value and mod revision at rev (0: the latest),
	// or an error matching engine.ErrNotFound.
	GetAt(key []byte, rev uint64) ([]byte, uint64, error)
	// ScanAt is Scan at rev (0: the latest), with each key's mod revision;
	// it also returns the revision it read at.
	ScanAt(prefix []byte, rev uint64, limit int, fn func(key, value []byte, modRev uint64) error) (more bool, readRev uint64, err error)
}

// atRevision is the --at-revision flag of get and scan.
type atRevision struct {
	rev uint64
	cmd *cobra.Command
}

func (r *atRevision) register(cmd *cobra.Command) {
	r.cmd = cmd
	cmd.Flags().Uint64Var(&r.rev, "at-revision", 0, "server mode: read at revision R, a past point within the servers' retained history (0: the latest, with mod revisions)")
}

// set reports whether --at-revision was given.
func (r *atRevision) set() bool { return r.cmd.Flags().Changed("at-revision") }

// check refuses --at-revision in local mode, before anything is opened.
func (r *atRevision) check(a *app) error {
	if r.set() && !a.serverMode() {
		return r.localError()
	}
	return nil
}

func (r *atRevision) localError() error {
	return usageErrorf("--at-revision needs server mode: a local database (--data) keeps only the latest values; drop --data, or give --server ADDR")
}

// reader returns b as a revisionReader, or a usage error in local mode.
func (r *atRevision) reader(b kvBackend) (revisionReader, error) {
	rr, ok := b.(revisionReader)
	if !ok {
		return nil, r.localError()
	}
	return rr, nil
}

func (a *app) newGetCmd() *cobra.Command {
	var h hexArgs
	var at atRevision
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value stored under KEY (exit 2 when absent)",
		Long: `Print the value stored under KEY: the raw bytes followed by a newline.
A missing key prints an error on stderr and exits with status 2; with --json
it prints {"found":false,...} on stdout and exits with status 2.

With --at-revision R (server mode) it prints the value KEY had at revision R
(--json adds its mod_revision); a revision older than the servers' retained
history exits with status 4 and names the oldest readable one.`,
		Args: exactArgs(1, "KEY"),
	}
	h.register(cmd)
	at.register(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		key, err := h.decode("KEY", args[0])
		if err != nil {
			return err
		}
		if err := at.check(a); err != nil {
			return err
		}
		return a.withBackend(readOnly, func(b kvBackend) error {
			var v []byte
			var modRev *uint64
			if at.set() {
				rr, rerr := at.reader(b)
				if rerr != nil {
					return rerr
				}
				var mod uint64
				v, mod, err = rr.GetAt(key, at.rev)
				modRev = &mod
			} else {
				v, err = b.Get(key)
			}
			if errors.Is(err, engine.ErrNotFound) {
				nf := &cliError{code: ExitNotFound, err: fmt.Errorf("key %s not found", quoteForMessage(key))}
				if a.json {
					nf.quiet = true
					if werr := writeJSON(a.stdout, getResult{Found: false, keyField: makeKeyField(key)}); werr != nil {
						return werr
					}
				}
				return nf
			}
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(a.stdout, getResult{Found: true, keyField: makeKeyField(key), valueField: makeValueField(v), ModRevision: modRev})
			}
			// One write: a reader that stops after the value (od -N, head -c)
			// must not make kayactl fail with SIGPIPE on a second write.
			_, err = a.stdout.Write(append(append(make([]byte, 0, len(v)+1), v...), '\n'))
			return err
		})
	})
	return cmd
}

// quoteForMessage renders a key inside an error message: always quoted
// (Go syntax), or hex when it is not valid UTF-8.
func quoteForMessage(key []byte) string {
	s := formatBytes(key)
	if isPlain(key) {
		return fmt.Sprintf("%q", s)
	}
	return s
}

func (a *app) newDeleteCmd() *cobra.Command {
	var h hexArgs
	cmd := &cobra.Command{
		Use:     "delete KEY",
		Aliases: []string{"del"},
		Short:   "Delete KEY (deleting a missing key is not an error)",
		Args:    exactArgs(1, "KEY"),
	}
	h.register(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		key, err := h.decode("KEY", args[0])
		if err != nil {
			return err
		}
		return a.withBackend(mayCreate, func(b kvBackend) error {
			if err := b.Delete(key); err != nil {
				return err
			}
			if a.json {
				return writeJSON(a.stdout, okResult{OK: true})
			}
			_, err := fmt.Fprintln(a.stdout, "OK")
			return err
		})
	})
	return cmd
}

type scanItem struct {
	keyField
	valueField
	// ModRevision is set with --at-revision.
	ModRevision *uint64 `json:"mod_revision,omitempty"`
}

type scanResult struct {
	Items []scanItem `json:"items"`
	Count int        `json:"count"`
	// Truncated is true when --limit stopped the scan before the last
	// matching key.
	Truncated bool `json:"truncated"`
	// Revision is set with --at-revision: the revision the scan read at.
	Revision *uint64 `json:"revision,omitempty"`
}

func (a *app) newScanCmd() *cobra.Command {
	var h hexArgs
	var limit int
	var keysOnly bool
	var at atRevision
	cmd := &cobra.Command{
		Use:   "scan PREFIX",
		Short: "List the keys starting with PREFIX (\"\" for all) and their values",
		Long: `List the keys starting with PREFIX, in key order, one "key<TAB>value" line
each (only the key with --keys-only). PREFIX may be the empty string ("") to
list everything. Keys and values that are not printable ASCII are shown
Go-quoted, or as 0x-hex when they are not valid UTF-8.

With --at-revision R (server mode) it lists what the keys held at revision R
(0: the latest), all at that one revision, page by page past the server's
100,000-item cap; --json adds each key's mod_revision and the revision read.`,
		Args: exactArgs(1, "PREFIX"),
	}
	h.register(cmd)
	at.register(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most N keys (0 = no limit)")
	cmd.Flags().BoolVar(&keysOnly, "keys-only", false, "print only the keys (JSON items without value)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if limit < 0 {
			return usageErrorf("--limit must be >= 0 (got %d)", limit)
		}
		prefix, err := h.decode("PREFIX", args[0])
		if err != nil {
			return err
		}
		if err := at.check(a); err != nil {
			return err
		}
		return a.withBackend(readOnly, func(b kvBackend) error {
			res := scanResult{Items: []scanItem{}}
			each := func(k, v []byte, modRev *uint64) error {
				res.Count++
				if a.json {
					item := scanItem{keyField: makeKeyField(k), ModRevision: modRev}
					if !keysOnly {
						item.valueField = makeValueField(v)
					}
					res.Items = append(res.Items, item)
					return nil
				}
				if keysOnly {
					_, err := fmt.Fprintf(a.stdout, "%s\n", formatBytes(k))
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "%s\t%s\n", formatBytes(k), formatBytes(v))
				return err
			}
			var more bool
			var err error
			if at.set() {
				rr, rerr := at.reader(b)
				if rerr != nil {
					return rerr
				}
				var readRev uint64
				more, readRev, err = rr.ScanAt(prefix, at.rev, limit, func(k, v []byte, modRev uint64) error {
					return each(k, v, &modRev)
				})
				res.Revision = &readRev
			} else {
				more, err = b.Scan(prefix, limit, func(k, v []byte) error { return each(k, v, nil) })
			}
			if err != nil {
				return err
			}
			res.Truncated = more
			if a.json {
				return writeJSON(a.stdout, res)
			}
			if more {
				fmt.Fprintf(a.stderr, "note: stopped after %s (--limit); more keys match\n", plural(res.Count, "key"))
			}
			return nil
		})
	})
	return cmd
}
