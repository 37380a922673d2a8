package jepsen

import (
	"fmt"
	"strings"
)

// The bank workload: BankAccounts accounts start with BankInitial each;
// clients transfer 1..bankMaxTransfer between two of them in a
// transaction (read both, and, if the source holds enough, write both),
// and read every balance in a read-only transaction. Money is neither
// created nor destroyed, so every committed read of all balances — a
// snapshot — sums to the initial total, and no balance is negative
// (transfers check for that).
const (
	BankAccounts    = 8
	BankInitial     = 100
	bankMaxTransfer = 5
	// bankShown bounds the bad reads quoted in the verdict.
	bankShown = 5
)

// BankTotal is the money in the bank.
const BankTotal = BankAccounts * BankInitial

func bankKey(i int) string { return fmt.Sprintf("bank/%d", i) }

// checkBank verifies every committed read of the balances: all accounts
// present, the sum equal to total, no balance negative; and that a final
// read (after healing) exists and passes the same test.
func checkBank(ops []Op, accounts int, total int64) Verdict {
	v := Verdict{Checker: "bank", Result: "ok"}
	var bad []string
	nBad, reads, transfers, declined, finals := 0, 0, 0, 0, 0
	for _, op := range ops {
		switch {
		case op.Kind == KindTransfer:
			if op.Status == StatusOK {
				transfers++
			} else if op.Declined {
				declined++
			}
		case op.Kind == KindBalances && op.Status == StatusOK:
			reads++
			if op.Final {
				finals++
			}
			if problem := bankReadProblem(op, accounts, total); problem != "" {
				nBad++
				if len(bad) < bankShown {
					what := "read"
					if op.Final {
						what = "final read"
					}
					bad = append(bad, fmt.Sprintf("%s of client %d at %s–%s: %s", what, op.Client, fmtNanos(op.Call), fmtNanos(op.Return), problem))
				}
			}
		}
	}
	v.Ops = reads + transfers
	v.Detail = fmt.Sprintf("%d committed reads of all %d accounts (%d final), %d transfers committed, %d declined for lack of funds", reads, accounts, finals, transfers, declined)
	switch {
	case nBad > 0:
		v.Result = "violation"
		v.Detail = fmt.Sprintf("%d of %d reads are wrong: %s; %s", nBad, reads, strings.Join(bad, "; "), v.Detail)
	case finals == 0:
		v.Result = "unknown"
		v.Detail = "no final read of the balances succeeded, so the final total is not known; " + v.Detail
	}
	return v
}

// bankReadProblem says what is wrong with one read of the balances ("":
// nothing).
func bankReadProblem(op Op, accounts int, total int64) string {
	if op.Error != "" {
		return op.Error
	}
	if len(op.Balances) != accounts {
		return fmt.Sprintf("%d balances, want %d", len(op.Balances), accounts)
	}
	sum := int64(0)
	var neg []string
	for i, b := range op.Balances {
		sum += b
		if b < 0 {
			neg = append(neg, fmt.Sprintf("%s = %d", bankKey(i), b))
		}
	}
	var p []string
	if sum != total {
		p = append(p, fmt.Sprintf("balances %v sum to %d, not %d", op.Balances, sum, total))
	}
	if len(neg) > 0 {
		p = append(p, "negative: "+strings.Join(neg, ", "))
	}
	return strings.Join(p, "; ")
}
