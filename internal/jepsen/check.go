package jepsen

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
)

// regInput is a register operation for the checker.
type regInput struct {
	Key   string
	Write bool
	Value int64
}

// registerModel is a set of independent registers, checked per key.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.Write {
			return true, in.Value
		}
		return output.(int64) == state.(int64), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.Write {
			return fmt.Sprintf("put(%s, %x)", in.Key, in.Value)
		}
		return fmt.Sprintf("get(%s) → %x", in.Key, output.(int64))
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%x", state.(int64)) },
}

// scanInput is a scan-workload operation for the checker.
type scanInput struct {
	Scan  bool
	Slot  int
	Value int64
}

// scanState is the scan workload's whole key space.
type scanState [scanKeys]int64

// scanModel checks puts and prefix scans over a few keys as one object.
var scanModel = porcupine.Model{
	Init: func() any { return scanState{} },
	Step: func(state, input, output any) (bool, any) {
		st := state.(scanState)
		in := input.(scanInput)
		if !in.Scan {
			st[in.Slot] = in.Value
			return true, st
		}
		return output.(scanState) == st, st
	},
	DescribeOperation: func(input, output any) string {
		in := input.(scanInput)
		if !in.Scan {
			return fmt.Sprintf("put(scan/%d, %x)", in.Slot, in.Value)
		}
		return fmt.Sprintf("scan(scan/) → %x", output.(scanState))
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%x", state.(scanState)) },
}

// pendingReturn is the return time given to writes whose outcome is
// unknown: after everything else, so they may take effect at any later
// point (or never, if nothing observes them).
func pendingReturn(ops []Op) int64 {
	end := int64(0)
	for _, op := range ops {
		end = max(end, op.Return)
	}
	return end + int64(time.Hour)
}

// registerOps converts the register part of a history.
func registerOps(ops []Op) []porcupine.Operation {
	never := pendingReturn(ops)
	var out []porcupine.Operation
	for _, op := range ops {
		switch {
		case op.Kind == KindWrite && op.Status != StatusFail:
			ret := op.Return
			if op.Status == StatusUnknown {
				ret = never
			}
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: regInput{Key: op.Key, Write: true, Value: op.Value}, Call: op.Call, Output: int64(0), Return: ret})
		case op.Kind == KindRead && op.Status == StatusOK:
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: regInput{Key: op.Key}, Call: op.Call, Output: op.Value, Return: op.Return})
		}
	}
	return out
}

// scanOps converts the scan part of a history.
func scanOps(ops []Op) []porcupine.Operation {
	never := pendingReturn(ops)
	var out []porcupine.Operation
	for _, op := range ops {
		switch {
		case op.Kind == KindPut && op.Status != StatusFail:
			ret := op.Return
			if op.Status == StatusUnknown {
				ret = never
			}
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: scanInput{Slot: op.Slot, Value: op.Value}, Call: op.Call, Output: scanState{}, Return: ret})
		case op.Kind == KindScan && op.Status == StatusOK:
			var st scanState
			copy(st[:], op.Scan)
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: scanInput{Scan: true}, Call: op.Call, Output: st, Return: op.Return})
		}
	}
	return out
}

// Verdict is one checker's result.
type Verdict struct {
	Checker string `json:"checker"`
	Result  string `json:"result"` // ok, violation, unknown (checker timed out)
	Ops     int    `json:"ops"`
	Detail  string `json:"detail,omitempty"`
	// Visualization is the porcupine HTML written for this checker.
	Visualization string `json:"visualization,omitempty"`
	// Report is this checker's full report (the list-append checker's
	// anomalies, each written out).
	Report string `json:"report,omitempty"`
}

// checkLinearizable runs porcupine on ops with model and writes the
// visualization into dir when the history is not linearizable (or always,
// with alwaysVisualize).
func checkLinearizable(name string, model porcupine.Model, ops []porcupine.Operation, timeout time.Duration, dir string, alwaysVisualize bool) Verdict {
	v := Verdict{Checker: name, Ops: len(ops)}
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	switch res {
	case porcupine.Ok:
		v.Result = "ok"
	case porcupine.Illegal:
		v.Result = "violation"
		v.Detail = "the history is not linearizable: see the visualization"
	default:
		v.Result = "unknown"
		v.Detail = fmt.Sprintf("the checker did not finish within %s", timeout)
	}
	if dir != "" && (res != porcupine.Ok || alwaysVisualize) {
		path := filepath.Join(dir, name+".html")
		if err := porcupine.VisualizePath(model, info, path); err == nil {
			v.Visualization = path
		}
	}
	return v
}

// checkSet verifies the set workload: every acknowledged element is in the
// final read, and nothing there was never written or was refused (a
// failed add was certainly not applied: see writeStatus).
func checkSet(ops []Op, final map[string]int64) Verdict {
	v := Verdict{Checker: "set", Result: "ok"}
	attempted := map[string]int64{}
	failed := map[string]bool{}
	var lost []string
	for _, op := range ops {
		if op.Kind != KindAdd {
			continue
		}
		v.Ops++
		if op.Status == StatusFail {
			failed[op.Key] = true
			continue
		}
		attempted[op.Key] = op.Value
		if op.Status == StatusOK {
			if got, ok := final[op.Key]; !ok || got != op.Value {
				lost = append(lost, op.Key)
			}
		}
	}
	var phantom, refused []string
	for k, val := range final {
		if want, ok := attempted[k]; !ok || want != val {
			if failed[k] {
				refused = append(refused, k)
			} else {
				phantom = append(phantom, k)
			}
		}
	}
	if len(lost) > 0 || len(phantom) > 0 || len(refused) > 0 {
		v.Result = "violation"
		sort.Strings(lost)
		sort.Strings(phantom)
		sort.Strings(refused)
		v.Detail = fmt.Sprintf("%d acknowledged elements missing %s; %d unexpected elements %s", len(lost), head(lost, 10), len(phantom), head(phantom, 10))
		if len(refused) > 0 {
			v.Detail += fmt.Sprintf("; %d elements present whose add failed (refused before it was proposed) %s", len(refused), head(refused, 10))
		}
	}
	return v
}

func head(s []string, n int) string {
	if len(s) > n {
		return "[" + strings.Join(s[:n], " ") + " …]"
	}
	return "[" + strings.Join(s, " ") + "]"
}

// NodeState is what a stopped node's engine holds.
type NodeState struct {
	ID      uint64 `json:"id"`
	Applied uint64 `json:"applied_index"`
	Keys    int    `json:"keys"`
	Hash    string `json:"hash"`
}

// readNodeState opens a stopped node's engine read-only and hashes its
// user keys and values.
func readNodeState(n *Node) (NodeState, error) {
	st := NodeState{ID: n.ID}
	db, err := engine.Open(filepath.Join(n.Dir, "engine"), &engine.Options{ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("node %d: opening its engine: %w", n.ID, err)
	}
	defer db.Close()
	if st.Applied, _, err = kv.ReadApplied(db); err != nil {
		return st, err
	}
	it, err := db.NewIter(&engine.IterOptions{LowerBound: []byte{kv.SystemPrefix + 1}})
	if err != nil {
		return st, err
	}
	h := sha256.New()
	for ok := it.First(); ok; ok = it.Next() {
		st.Keys++
		fmt.Fprintf(h, "%d:%s=%d:%s\n", len(it.Key()), it.Key(), len(it.Value()), it.Value())
	}
	if err := it.Close(); err != nil {
		return st, err
	}
	st.Hash = hex.EncodeToString(h.Sum(nil))[:16]
	return st, nil
}

// checkConvergence compares the nodes' final data. (Their applied indexes
// were compared live, before the shutdown; a graceful stop hands
// leadership over, and the new leader's empty entry may reach some nodes
// before they stop and not others, so the indexes on disk may differ by
// entries that carry no data.)
func checkConvergence(states []NodeState) Verdict {
	v := Verdict{Checker: "convergence", Result: "ok", Ops: len(states)}
	for _, s := range states[1:] {
		if s.Hash != states[0].Hash || s.Keys != states[0].Keys {
			v.Result = "violation"
			var parts []string
			for _, x := range states {
				parts = append(parts, fmt.Sprintf("node %d: applied %d, %d keys, hash %s", x.ID, x.Applied, x.Keys, x.Hash))
			}
			v.Detail = "the nodes differ after healing: " + strings.Join(parts, "; ")
			break
		}
	}
	return v
}

// writeFile writes data into the report.
func writeFile(dir, name string, data []byte) error {
	return os.WriteFile(filepath.Join(dir, name), data, 0o644)
}
