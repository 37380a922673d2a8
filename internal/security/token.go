package security

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"unicode/utf8"
)

// MaxTokenSize is the longest token the protocol carries (a bytes16 field).
const MaxTokenSize = 1<<16 - 1

// MinTokenSize is the shortest token accepted where a short one is refused
// (every token with --allow-public-bind, the peer token always): 16 random
// bytes are 128 bits, beyond guessing over a network.
const MinTokenSize = 16

// GenerateHint is the command that makes a good token file.
func GenerateHint(path string) string {
	if path == "" {
		path = "FILE"
	}
	return fmt.Sprintf("head -c 32 /dev/urandom | base64 > %s && chmod 600 %s", path, path)
}

// CheckTokenLength refuses a token shorter than MinTokenSize. flag is
// where it came from (--client-token, or --client-token-file with file
// set to the path); why says what requires the length (for example
// "with --allow-public-bind").
func CheckTokenLength(flag, file, tok, why string) error {
	if len(tok) >= MinTokenSize {
		return nil
	}
	if file != "" {
		return fmt.Errorf("the token in %s %s is %d bytes; %s a token must be at least %d bytes: make a new one with: %s",
			flag, file, len(tok), why, MinTokenSize, GenerateHint(file))
	}
	return fmt.Errorf("%s is %d bytes; %s a token must be at least %d bytes: use a random secret (for example from: head -c 32 /dev/urandom | base64), preferably in %s-file",
		flag, len(tok), why, MinTokenSize, flag)
}

// ValidateToken checks a token's shape; name is how the user gave it (a
// flag or a file), for the message.
func ValidateToken(name, tok string) error {
	switch {
	case tok == "":
		return fmt.Errorf("%s is empty; give a secret of at least 16 random characters (for example from: openssl rand -hex 32)", name)
	case len(tok) > MaxTokenSize:
		return fmt.Errorf("%s is %d bytes; the protocol carries at most %d", name, len(tok), MaxTokenSize)
	case !utf8.ValidString(tok):
		return fmt.Errorf("%s is not valid UTF-8 text", name)
	case strings.ContainsAny(tok, "\r\n"):
		return fmt.Errorf("%s contains a line break", name)
	}
	return nil
}

// ReadTokenFile reads a token from a file: its content with surrounding
// white space (a trailing newline) removed. A file every user may write is
// refused (anyone on the machine could put their own token in it); it
// returns a warning when the file is readable by other users.
func ReadTokenFile(flag, path string) (tok, warning string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %v", flag, path, err)
	}
	if !st.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s %s: not a regular file", flag, path)
	}
	if st.Mode().Perm()&0o002 != 0 {
		return "", "", fmt.Errorf("%s %s is writable by every user (mode %v): anyone on this machine could replace the token; run: chmod 600 %s",
			flag, path, st.Mode().Perm(), path)
	}
	if st.Size() > MaxTokenSize+16 {
		return "", "", fmt.Errorf("%s %s: %d bytes is too large for a token (at most %d)", flag, path, st.Size(), MaxTokenSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %v", flag, path, err)
	}
	tok = strings.TrimSpace(string(b))
	if err := ValidateToken(fmt.Sprintf("the token in %s %s", flag, path), tok); err != nil {
		return "", "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("%s %s is readable by other users (mode %v); run: chmod 600 %s", flag, path, st.Mode().Perm(), path)
	}
	return tok, warning, nil
}

// DirWarnings returns warnings about a data directory's permissions: it
// should be accessible by its owner only.
func DirWarnings(dir string) []string {
	st, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	var out []string
	if p := st.Mode().Perm(); p&0o077 != 0 {
		out = append(out, fmt.Sprintf("data directory %s is accessible by other users (mode %v); it holds every key and value: run chmod 700 %s", dir, fs.FileMode(p), dir))
	}
	return out
}

// RunningAsRoot reports whether the process runs with uid 0.
func RunningAsRoot() bool { return os.Geteuid() == 0 }
