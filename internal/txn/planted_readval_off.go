//go:build !kaya_planted_skip_read_validation

package txn

// plantedSkipReadValidation is false in every real build (see
// planted_readval_on.go).
const plantedSkipReadValidation = false
