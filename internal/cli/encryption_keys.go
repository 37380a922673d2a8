package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/internal/crypt"
)

// keyFlags are the encryption-at-rest flags of the local commands that read
// engine files (inspect, recover): the same flags as kayadb-server's.
type keyFlags struct {
	keyFile, keyringFile string
}

func (k *keyFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.keyFile, "encryption-key-file", "",
		"key file (32 raw bytes, key id 0) that opens encrypted files (as kayadb-server's flag)")
	cmd.Flags().StringVar(&k.keyringFile, "encryption-keyring-file", "",
		"keyring file that opens encrypted files (as kayadb-server's flag)")
}

// given reports whether a key was given.
func (k *keyFlags) given() bool { return k.keyFile != "" || k.keyringFile != "" }

// sealer loads the key or keyring (nil, nil when neither flag is set).
func (k *keyFlags) sealer() (*crypt.Sealer, error) {
	switch {
	case k.keyFile != "" && k.keyringFile != "":
		return nil, usageErrorf("--encryption-key-file and --encryption-keyring-file are exclusive; give one")
	case k.keyFile != "":
		r, err := crypt.LoadFile(k.keyFile, false)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		return crypt.NewSealer(r), nil
	case k.keyringFile != "":
		r, err := crypt.LoadFile(k.keyringFile, true)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		return crypt.NewSealer(r), nil
	}
	return nil, nil
}

// keyHint explains an error caused by encryption: a file sealed with a key
// that was not given, or one that does not open it. It returns "" for other
// errors.
func (k *keyFlags) keyHint(err error) string {
	var ke *crypt.KeyError
	if err == nil || !errors.As(err, &ke) {
		return ""
	}
	switch {
	case errors.Is(err, crypt.ErrUnknownKey) && !k.given():
		return fmt.Sprintf("the file is encrypted (key id %d) and no key was given: pass --encryption-key-file or --encryption-keyring-file with the node's key", ke.ID)
	case errors.Is(err, crypt.ErrUnknownKey):
		return fmt.Sprintf("the file is encrypted with key id %d, which the given key file or keyring lacks", ke.ID)
	default:
		return fmt.Sprintf("key id %d does not open the file: a wrong key under that id, or the file was changed", ke.ID)
	}
}

// withKeyHint makes err a cliError carrying keyHint's explanation, when
// there is one.
func (k *keyFlags) withKeyHint(err error) error {
	hint := k.keyHint(err)
	if hint == "" {
		return err
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return &cliError{code: ce.code, err: ce.err, hint: hint}
	}
	return &cliError{code: ExitError, err: err, hint: hint}
}
