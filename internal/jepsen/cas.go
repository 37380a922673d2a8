package jepsen

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// The cas-register workload: a few registers, each read (a linearizable
// GET), written (PUT) and compare-and-swapped (the one-shot conditional
// write: CompareAndSwap(key, old, new) answers whether it swapped), with
// values from a small domain so that swaps often succeed. The history is
// checked for linearizability against a register with compare-and-swap.
const (
	casKeys = 3
	// casValues is the domain of written values, 1..casValues (0 is
	// "absent"): small, as Jepsen's cas-register, so that a
	// compare-and-swap's expected value is often the current one.
	casValues = 5
)

func casKey(i int) string { return fmt.Sprintf("cas/%d", i) }

// casInput is one cas-register operation for the checker.
type casInput struct {
	Key  string
	Kind string // KindCASRead, KindCASWrite or KindCAS
	// Value is a write's value or a swap's new value.
	Value int64
	Old   int64
}

// casOutput is what the operation answered.
type casOutput struct {
	Value   int64 // a read's value (0: absent)
	Swapped bool
	// Unknown marks a write or swap whose outcome is unknown: it may have
	// taken effect at any point after its invocation, or never.
	Unknown bool
}

// casModel is a set of independent registers with compare-and-swap,
// checked per key. A swap that answered swapped=true must have found the
// expected value; one that answered false must not have. A swap of
// unknown outcome swaps if it finds the expected value: its return is
// after everything else (pendingReturn), so it can also be placed where
// it changes nothing that anyone observed, which covers "never applied".
var casModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(casInput).Key
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
		st, in, out := state.(int64), input.(casInput), output.(casOutput)
		switch in.Kind {
		case KindCASWrite:
			return true, in.Value
		case KindCAS:
			match := st == in.Old
			if out.Unknown {
				if match {
					return true, in.Value
				}
				return true, st
			}
			if out.Swapped != match {
				return false, st
			}
			if match {
				return true, in.Value
			}
			return true, st
		default:
			return out.Value == st, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(casInput), output.(casOutput)
		switch in.Kind {
		case KindCASWrite:
			return fmt.Sprintf("put(%s, %d)", in.Key, in.Value)
		case KindCAS:
			res := fmt.Sprint(out.Swapped)
			if out.Unknown {
				res = "?"
			}
			return fmt.Sprintf("cas(%s, %d→%d) → %s", in.Key, in.Old, in.Value, res)
		default:
			return fmt.Sprintf("get(%s) → %d", in.Key, out.Value)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
}

// casOps converts the cas-register part of a history: failed writes and
// swaps (certainly not applied) and failed reads are left out; writes and
// swaps of unknown outcome return after everything else.
func casOps(ops []Op) []porcupine.Operation {
	never := pendingReturn(ops)
	var out []porcupine.Operation
	for _, op := range ops {
		switch op.Kind {
		case KindCASRead, KindCASWrite, KindCAS:
		default:
			continue
		}
		if op.Status == StatusFail || (op.Kind == KindCASRead && op.Status != StatusOK) {
			continue
		}
		in := casInput{Key: op.Key, Kind: op.Kind, Value: op.Value, Old: op.Old}
		o := casOutput{Swapped: op.Swapped, Unknown: op.Status == StatusUnknown}
		ret := op.Return
		if o.Unknown {
			ret = never
		}
		if op.Kind == KindCASRead {
			in.Value, o.Value = 0, op.Value
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: in, Call: op.Call, Output: o, Return: ret})
	}
	return out
}
