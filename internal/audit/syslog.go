package audit

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Syslog messages (RFC 5424):
//
//	<110>1 2026-12-06T04:40:00.123Z host kayadb 4242 audit - {"ts":...}
//
// PRI 110 is facility 13 ("log audit") and severity 6 (informational);
// the structured data is empty ("-") and the message is the JSON line
// without its newline. Over UDP (RFC 5426) each message is one datagram;
// over TLS (RFC 5425) each is framed by octet counting: its length in
// decimal, a space, the message.
const syslogPRI = "<110>1 "

// syslogTimeout bounds a TLS dial and a write to the collector, so that a
// collector that stopped reading marks the sink failing instead of
// holding the writer for ever.
const syslogTimeout = 5 * time.Second

// appendSyslog appends e as an RFC 5424 message.
func appendSyslog(b []byte, o *Options, e entry) []byte {
	b = append(b, syslogPRI...)
	b = e.ts.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, ' ')
	b = appendHeaderField(b, o.Hostname, 255)
	b = append(b, ' ')
	b = appendHeaderField(b, o.AppName, 48)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(os.Getpid()), 10)
	b = append(b, " audit - "...)
	line := e.line
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	return append(b, line...)
}

// appendHeaderField appends a header field: printable US-ASCII without
// spaces, at most limit bytes, "-" when empty (RFC 5424 §6).
func appendHeaderField(b []byte, s string, limit int) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s) && i < limit; i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// udpWriter sends each line as one datagram on a connected UDP socket
// (the original KayaDB's --audit-syslog).
type udpWriter struct {
	o    *Options
	conn net.Conn
	buf  []byte
}

func newUDPWriter(o *Options) (*udpWriter, error) {
	addr, err := net.ResolveUDPAddr("udp", o.SyslogUDP)
	if err != nil {
		return nil, fmt.Errorf("--audit-syslog %s: %w (want HOST:PORT of a syslog collector)", o.SyslogUDP, err)
	}
	conn, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("--audit-syslog %s: %w", o.SyslogUDP, err)
	}
	return &udpWriter{o: o, conn: conn}, nil
}

func (w *udpWriter) write(batch []entry) (int, string, error) {
	for i, e := range batch {
		w.buf = appendSyslog(w.buf[:0], w.o, e)
		if _, err := w.conn.Write(w.buf); err != nil {
			// A collector that is down shows as ECONNREFUSED (ICMP port
			// unreachable) on a later send.
			return i, "send", err
		}
	}
	return len(batch), "", nil
}

func (w *udpWriter) tick() (string, error) { return "", nil }
func (w *udpWriter) close() error          { return w.conn.Close() }

// tlsWriter sends octet-counted messages over one TLS connection, dialled
// by the writer when needed and again after any error.
type tlsWriter struct {
	o    *Options
	conn *tls.Conn
	buf  []byte
}

func newTLSWriter(o *Options) *tlsWriter { return &tlsWriter{o: o} }

func (w *tlsWriter) dial() error {
	cfg := w.o.SyslogTLSConfig
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(w.o.SyslogTLS)
		if err != nil {
			return err
		}
		cfg.ServerName = host
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: syslogTimeout}, Config: cfg}
	c, err := d.Dial("tcp", w.o.SyslogTLS)
	if err != nil {
		return err
	}
	w.conn = c.(*tls.Conn)
	return nil
}

func (w *tlsWriter) write(batch []entry) (int, string, error) {
	if w.conn == nil {
		if err := w.dial(); err != nil {
			return 0, "dial", err
		}
	}
	w.buf = w.buf[:0]
	var msg []byte
	for _, e := range batch {
		msg = appendSyslog(msg[:0], w.o, e)
		w.buf = strconv.AppendInt(w.buf, int64(len(msg)), 10)
		w.buf = append(w.buf, ' ')
		w.buf = append(w.buf, msg...)
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(syslogTimeout))
	if _, err := w.conn.Write(w.buf); err != nil {
		// Some of the batch may have arrived: it is sent again whole
		// (at least once) on a new connection.
		_ = w.conn.Close()
		w.conn = nil
		return 0, "send", err
	}
	return len(batch), "", nil
}

func (w *tlsWriter) tick() (string, error) { return "", nil }

func (w *tlsWriter) close() error {
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	return err
}
