//go:build kaya_planted_skip_read_validation

package txn

// plantedSkipReadValidation makes the commit's apply skip the validation
// of the read set: serializable transactions then validate only what they
// wrote, as snapshot isolation does, and write skew (G2) commits. A
// deliberate bug for the harness's negative control (kaya-jepsen's
// list-append and bank workloads must report it INVALID). Never ship a
// build with this tag.
const plantedSkipReadValidation = true
