package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/internal/buildinfo"
)

// versionResult is the --json output of kayactl version: the build of
// kayactl itself and, when servers were named, theirs.
type versionResult struct {
	buildinfo.Info
	Servers []serverVersion `json:"servers,omitempty"`
}

// serverVersion is one server's answer: the "version" member of its STATS
// ("" from a server too old to report it).
type serverVersion struct {
	Endpoint string `json:"endpoint"`
	NodeID   uint64 `json:"node_id,omitempty"`
	Version  string `json:"version,omitempty"`
	Error    string `json:"error,omitempty"`
}

func (a *app) newVersionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kayactl's version (and, with --server, each server's)",
		Long: `Print the version of kayactl: the module version, the VCS revision it was
built from, the Go version and the client protocol version it speaks (the
same as kayactl --version). When servers are named (--server or
$KAYA_SERVER) it also asks each for its version (the "version" member of
STATS) and exits with status 1 if one does not answer.`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		res := versionResult{Info: buildinfo.Read()}
		var firstErr error
		if a.explicitServers() {
			c, ctx, cancel, err := a.newClient()
			if err != nil {
				return err
			}
			defer cancel()
			defer c.Close()
			for _, ep := range a.servers() {
				sv := serverVersion{Endpoint: ep}
				st, err := c.Status(ctx, ep)
				if err != nil {
					sv.Error = err.Error()
					if firstErr == nil {
						firstErr = &endpointError{ep: ep, err: err}
					}
				} else {
					sv.NodeID = st.NodeID
					var doc struct {
						Version string `json:"version"`
					}
					if json.Unmarshal(st.Raw, &doc) == nil {
						sv.Version = doc.Version
					}
				}
				res.Servers = append(res.Servers, sv)
			}
		}
		if a.json {
			if err := writeJSON(a.stdout, res); err != nil {
				return err
			}
			return firstErr
		}
		fmt.Fprintln(a.stdout, res.Info.Line("kayactl"))
		for _, sv := range res.Servers {
			switch {
			case sv.Error != "":
				fmt.Fprintf(a.stdout, "server %s: no answer\n", sv.Endpoint)
			case sv.Version == "":
				fmt.Fprintf(a.stdout, "server %s (node %d): version not reported (a server older than this kayactl)\n", sv.Endpoint, sv.NodeID)
			default:
				fmt.Fprintf(a.stdout, "server %s (node %d): %s\n", sv.Endpoint, sv.NodeID, formatBytes([]byte(sv.Version)))
			}
		}
		return firstErr
	})
	return cmd
}
