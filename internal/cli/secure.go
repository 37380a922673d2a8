package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/wire"
)

// secureFlags are kayactl's server-mode credentials: TLS and tokens. Each
// flag can also come from its KAYA_* environment variable; the flag wins.
type secureFlags struct {
	tls                    bool
	caCert, cert, key, sni string
	opToken, opTokenFile   string
	clToken, clTokenFile   string
}

// secureEnv maps each flag to its environment variable.
var secureEnv = map[string]string{
	"tls": "KAYA_TLS", "tls-ca-cert": "KAYA_TLS_CA_CERT", "tls-cert": "KAYA_TLS_CERT", "tls-key": "KAYA_TLS_KEY",
	"tls-server-name": "KAYA_TLS_SERVER_NAME",
	"operator-token":  "KAYA_OPERATOR_TOKEN", "operator-token-file": "KAYA_OPERATOR_TOKEN_FILE",
	"client-token": "KAYA_CLIENT_TOKEN", "client-token-file": "KAYA_CLIENT_TOKEN_FILE",
}

func (a *app) addSecureFlags(pf *pflag.FlagSet) {
	f := &a.sec
	pf.BoolVar(&f.tls, "tls", false, "server mode: connect with TLS (implied by the other --tls-* flags; $KAYA_TLS)")
	pf.StringVar(&f.caCert, "tls-ca-cert", "", "server mode: PEM CA bundle that signed the servers' certificates (default: the system roots; $KAYA_TLS_CA_CERT)")
	pf.StringVar(&f.cert, "tls-cert", "", "server mode: PEM client certificate, for servers that require one (--tls-ca on the server; $KAYA_TLS_CERT)")
	pf.StringVar(&f.key, "tls-key", "", "server mode: PEM private key of --tls-cert ($KAYA_TLS_KEY)")
	pf.StringVar(&f.sni, "tls-server-name", "", "server mode: name to verify in the servers' certificates (default: the host of each address; $KAYA_TLS_SERVER_NAME)")
	pf.StringVar(&f.opToken, "operator-token", "", "server mode: operator token for admin commands (add-node, remove-node, promote-node, transfer-leader, backup; $KAYA_OPERATOR_TOKEN)")
	pf.StringVar(&f.opTokenFile, "operator-token-file", "", "server mode: read the operator token from this file ($KAYA_OPERATOR_TOKEN_FILE)")
	pf.StringVar(&f.clToken, "client-token", "", "server mode: client token for data commands (put, get, delete, scan, status, bench; $KAYA_CLIENT_TOKEN)")
	pf.StringVar(&f.clTokenFile, "client-token-file", "", "server mode: read the client token from this file ($KAYA_CLIENT_TOKEN_FILE)")
}

// secureValue resolves a string flag: the flag when given, else its
// environment variable.
func (a *app) secureValue(name string, v string) string {
	if a.root != nil && a.root.PersistentFlags().Changed(name) {
		return v
	}
	if e, ok := a.lookupEnv(secureEnv[name]); ok {
		return e
	}
	return v
}

// clientOptions builds the client options of server mode: the timeout,
// TLS and the tokens.
func (a *app) clientOptions() (*client.Options, error) {
	timeout, err := a.requestTimeout()
	if err != nil {
		return nil, err
	}
	// FailFast: nothing listening anywhere is an answer now, not after
	// --timeout. MaxRetries: connection failures are retried until
	// --timeout rather than for a fixed count, so --timeout means what it
	// says: every back-off pauses at least 25 ms, so this many retries
	// cannot run out before the deadline does.
	o := &client.Options{RequestTimeout: timeout, FailFast: true,
		MaxRetries: max(client.DefaultMaxRetries, int(timeout/(25*time.Millisecond))+1)}
	tok := func(name, fileName, value, file string) (string, error) {
		value, file = a.secureValue(name, value), a.secureValue(fileName, file)
		if value != "" && file != "" {
			return "", usageErrorf("--%s and --%s are both given; use one", name, fileName)
		}
		if file != "" {
			t, _, err := security.ReadTokenFile("--"+fileName, file)
			if err != nil {
				return "", usageErrorf("%v", err)
			}
			return t, nil
		}
		if value != "" {
			if err := security.ValidateToken("--"+name, value); err != nil {
				return "", usageErrorf("%v", err)
			}
		}
		return value, nil
	}
	if o.OperatorToken, err = tok("operator-token", "operator-token-file", a.sec.opToken, a.sec.opTokenFile); err != nil {
		return nil, err
	}
	if o.ClientToken, err = tok("client-token", "client-token-file", a.sec.clToken, a.sec.clTokenFile); err != nil {
		return nil, err
	}
	o.TLS, err = a.tlsConfig()
	return o, err
}

// tlsConfig builds the client TLS configuration, or nil for plain TCP.
func (a *app) tlsConfig() (*tls.Config, error) {
	ca := a.secureValue("tls-ca-cert", a.sec.caCert)
	cert := a.secureValue("tls-cert", a.sec.cert)
	key := a.secureValue("tls-key", a.sec.key)
	sni := a.secureValue("tls-server-name", a.sec.sni)
	on := a.sec.tls
	if !(a.root != nil && a.root.PersistentFlags().Changed("tls")) {
		if v, ok := a.lookupEnv(secureEnv["tls"]); ok {
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "1", "true", "yes", "on":
				on = true
			case "", "0", "false", "no", "off":
			default:
				return nil, usageErrorf("$KAYA_TLS=%q: want true or false", v)
			}
		}
	}
	if !on && ca == "" && cert == "" && key == "" && sni == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: sni}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, usageErrorf("--tls-ca-cert %s: %v", ca, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--tls-ca-cert %s: no PEM certificate found in it", ca)
		}
		c.RootCAs = pool
	}
	switch {
	case cert != "" && key != "":
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, usageErrorf("--tls-cert %s / --tls-key %s: %v", cert, key, err)
		}
		c.Certificates = []tls.Certificate{kp}
	case cert != "" || key != "":
		return nil, usageErrorf("--tls-cert and --tls-key go together: give both")
	}
	return c, nil
}

// classifySecurity recognizes refused credentials and failed TLS
// handshakes and says what to do.
func (a *app) classifySecurity(err error) (*cliError, bool) {
	var se *client.ServerError
	if errors.As(err, &se) {
		switch se.Message {
		case wire.MsgOperatorCredential:
			return &cliError{code: ExitError, err: err,
				hint: "the servers require an operator token for this command: pass --operator-token-file FILE (or --operator-token, $KAYA_OPERATOR_TOKEN) with the servers' token"}, true
		case wire.MsgClientCredential:
			return &cliError{code: ExitError, err: err,
				hint: "the servers require a client token: pass --client-token-file FILE (or --client-token, $KAYA_CLIENT_TOKEN) with the servers' token"}, true
		}
	}
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &uae):
		return &cliError{code: ExitError, err: err, hint: "the server's certificate is not signed by a trusted CA: pass --tls-ca-cert with the cluster's CA"}, true
	case errors.As(err, &hne):
		return &cliError{code: ExitError, err: err, hint: "the server's certificate is not valid for the address used: connect by a name in the certificate or pass --tls-server-name"}, true
	case errors.As(err, &cie):
		return &cliError{code: ExitError, err: err, hint: "the server's certificate is invalid (expired?): check it with openssl x509 -noout -dates -in CERT"}, true
	case errors.As(err, &rhe):
		return &cliError{code: ExitError, err: err, hint: "the server did not answer with TLS: drop --tls and the --tls-* flags, or check the address"}, true
	}
	msg := err.Error()
	if strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority") {
		return &cliError{code: ExitError, err: err, hint: "the server requires a client certificate signed by its CA: pass --tls-cert and --tls-key"}, true
	}
	return nil, false
}

// classifyGreeting is the fallback for a server that hung up at the
// greeting when probing it told nothing more.
func classifyGreeting(err error) (*cliError, bool) {
	msg := err.Error()
	if strings.Contains(msg, "reading HELLO reply: EOF") || strings.Contains(msg, "reading HELLO reply: read: connection reset") {
		return &cliError{code: ExitError, err: err, hint: "the server closed the connection at the greeting: it probably requires TLS (pass --tls-ca-cert, and --tls-cert/--tls-key when it asks for client certificates) or is not a KayaDB client port"}, true
	}
	return nil, false
}
