package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kayadb/kayadb/internal/buildinfo"
)

// exitVersion is what ParseFlags returns for --version: Main prints the
// version on stdout and exits 0.
const exitVersion = -2

// buildInfoMetric is kayadb_build_info: a constant 1 whose labels say what
// the binary was built from (the Prometheus convention for versions, as
// in go_build_info and prometheus_build_info).
func buildInfoMetric() prometheus.Collector {
	bi := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kayadb_build_info",
		Help: "Always 1; the labels say what this kayadb-server was built from: the module version, the VCS revision (\"unknown\" when not stamped) and the Go version.",
		ConstLabels: prometheus.Labels{
			"version":   bi.Version,
			"revision":  bi.ShortRevision(),
			"goversion": bi.GoVersion,
		},
	})
	g.Set(1)
	return g
}
