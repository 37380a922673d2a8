package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestFeedWorkedBytes: the CDC rows of the reference's §7 (byte for byte
// the original's), and the bytes of the watch and consumer opcodes as
// drawn in doc.go, both ways: encoding gives the bytes, decoding the bytes
// gives the message back.
func TestFeedWorkedBytes(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	type row struct {
		name   string
		hex    string
		frame  []byte
		decode func(st Status, op Opcode, p []byte) (any, error)
		want   any
	}
	req := func(op Opcode, p []byte) []byte { return AppendRequest(nil, op, p) }
	resp := func(st Status, p []byte) []byte { return AppendResponse(nil, st, p) }
	evs := []CDCEvent{{Seq: 1, Op: CDCOpPut, Key: b("a"), Value: b("1")}, {Seq: 2, Op: CDCOpDelete, Key: b("a")}}
	watchEvs := []CDCEvent{{Seq: 7, Op: CDCOpPut, Key: b("a/x"), Value: b("1")}, {Seq: 7, Op: CDCOpDelete, Key: b("a/y")}}
	rows := []row{
		{"CDC_POLL backup, from 0, limit 10 (reference §7)", "15 00 00 00 0d 06 00 62 61 63 6b 75 70 00 00 00 00 00 00 00 00 0a 00 00 00",
			req(OpCDCPoll, AppendCDCPoll(nil, CDCPoll{Consumer: "backup", Limit: 10})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeCDCPoll(p) }, CDCPoll{Consumer: "backup", Limit: 10}},
		{"CDC_POLL OK [1 put a=1, 2 delete a] (reference §7)", "27 00 00 00 00 00 02 00 00 00 01 00 00 00 00 00 00 00 01 01 00 00 00 61 01 00 00 00 31 02 00 00 00 00 00 00 00 02 01 00 00 00 61",
			resp(StatusOK, AppendCDCPollReply(nil, evs)),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeCDCPollReply(p) }, evs},
		{"CDC_POLL OK empty (reference §7)", "06 00 00 00 00 00 00 00 00 00",
			resp(StatusOK, AppendCDCPollReply(nil, nil)),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeCDCPollReply(p) }, []CDCEvent{}},
		{"CDC_CHECKPOINT backup (reference §7)", "09 00 00 00 0e 06 00 62 61 63 6b 75 70",
			req(OpCDCCheckpoint, AppendCDCCheckpoint(nil, "backup")),
			func(_ Status, _ Opcode, p []byte) (any, error) {
				c, s, has, err := DecodeCDCCheckpointAt(p)
				return fmt.Sprintf("%s %d %v", c, s, has), err
			}, "backup 0 false"},
		{"CDC_CHECKPOINT backup at 12", "11 00 00 00 0e 06 00 62 61 63 6b 75 70 0c 00 00 00 00 00 00 00",
			req(OpCDCCheckpoint, AppendCDCCheckpointAt(nil, "backup", 12)),
			func(_ Status, _ Opcode, p []byte) (any, error) {
				c, s, has, err := DecodeCDCCheckpointAt(p)
				return fmt.Sprintf("%s %d %v", c, s, has), err
			}, "backup 12 true"},
		{"CDC_CONSUMER get backup", "0a 00 00 00 49 01 06 00 62 61 63 6b 75 70",
			req(OpCDCConsumer, AppendCDCConsumer(nil, CDCConsumerRequest{Action: CDCConsumerGet, Consumer: "backup"})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeCDCConsumer(p) }, CDCConsumerRequest{Action: 1, Consumer: "backup"}},
		{"CDC_CONSUMER OK seq 12", "0a 00 00 00 00 00 0c 00 00 00 00 00 00 00",
			resp(StatusOK, AppendSeq(nil, 12)),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeSeq(p) }, uint64(12)},
		{"WATCH_CREATE prefix a/ from 5, progress 1 s", "14 00 00 00 47 02 05 00 00 00 00 00 00 00 e8 03 00 00 02 00 00 00 61 2f",
			req(OpWatchCreate, AppendWatchCreate(nil, WatchCreate{Kind: WatchPrefix, StartRevision: 5, ProgressMs: 1000, Key: b("a/")})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchCreate(p) }, WatchCreate{Kind: 2, StartRevision: 5, ProgressMs: 1000, Key: b("a/")}},
		{"WATCH_CREATE OK id 1, start 5", "12 00 00 00 00 00 01 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00",
			resp(StatusOK, AppendWatchCreated(nil, WatchCreated{ID: 1, StartRevision: 5})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchCreated(p) }, WatchCreated{1, 5}},
		{"WATCH_CANCEL 1", "09 00 00 00 48 01 00 00 00 00 00 00 00",
			req(OpWatchCancel, AppendWatchCancel(nil, 1)),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchCancel(p) }, uint64(1)},
		{"WATCH_EVENT events at 7: put a/x=1, delete a/y", "3c 00 00 00 41 00 01 00 00 00 00 00 00 00 01 07 00 00 00 00 00 00 00 02 00 00 00 07 00 00 00 00 00 00 00 01 03 00 00 00 61 2f 78 01 00 00 00 31 07 00 00 00 00 00 00 00 02 03 00 00 00 61 2f 79",
			resp(StatusWatchEvent, AppendWatchEvent(nil, &WatchEvent{ID: 1, Kind: WatchEvents, Revision: 7, Events: watchEvs})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchEvent(p) }, WatchEvent{ID: 1, Kind: 1, Revision: 7, Events: watchEvs}},
		{"WATCH_EVENT progress at 9", "13 00 00 00 41 00 01 00 00 00 00 00 00 00 02 09 00 00 00 00 00 00 00",
			resp(StatusWatchEvent, AppendWatchEvent(nil, &WatchEvent{ID: 1, Kind: WatchProgress, Revision: 9})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchEvent(p) }, WatchEvent{ID: 1, Kind: 2, Revision: 9}},
		{"WATCH_EVENT canceled, compacted, oldest start 4", "21 00 00 00 41 00 01 00 00 00 00 00 00 00 03 04 00 00 00 00 00 00 00 01 09 00 00 00 63 6f 6d 70 61 63 74 65 64",
			resp(StatusWatchEvent, AppendWatchEvent(nil, &WatchEvent{ID: 1, Kind: WatchCanceled, Revision: 4, Reason: CancelCompacted, Message: "compacted"})),
			func(_ Status, _ Opcode, p []byte) (any, error) { return DecodeWatchEvent(p) }, WatchEvent{ID: 1, Kind: 3, Revision: 4, Reason: 1, Message: "compacted"}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			want, err := hex.DecodeString(strings.ReplaceAll(r.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.frame, want) {
				t.Fatalf("encoded\n % x\nwant\n % x", r.frame, want)
			}
			var got any
			if r.frame[4] < 64 && strings.Contains(r.name, "OK") || strings.HasPrefix(r.name, "WATCH_EVENT") {
				st, p := readOneResponse(t, want)
				got, err = r.decode(st, 0, p)
			} else {
				op, p := readOneRequest(t, want)
				got, err = r.decode(0, op, p)
			}
			if err != nil || !reflect.DeepEqual(got, r.want) {
				t.Fatalf("decoded %+v, %v; want %+v", got, err, r.want)
			}
		})
	}
}

// TestFeedDecodersStrict: the decoders of 71–73 and of pushed frames
// refuse trailing bytes, unknown kinds and out-of-bounds fields, with
// errors matching ErrMalformed; CDC_CHECKPOINT ignores bytes after its
// position, as the original's decoders do.
func TestFeedDecodersStrict(t *testing.T) {
	good := AppendWatchCreate(nil, WatchCreate{Kind: WatchKey, Key: []byte("k")})
	bad := map[string]func() error{
		"create trailing": func() error { _, err := DecodeWatchCreate(append(good, 0)); return err },
		"create kind":     func() error { p := bytes.Clone(good); p[0] = 3; _, err := DecodeWatchCreate(p); return err },
		"create progress": func() error {
			_, err := DecodeWatchCreate(AppendWatchCreate(nil, WatchCreate{Kind: 1, ProgressMs: MaxWatchProgressMs + 1}))
			return err
		},
		"create long key": func() error {
			_, err := DecodeWatchCreate(AppendWatchCreate(nil, WatchCreate{Kind: 1, Key: make([]byte, MaxKeySize+1)}))
			return err
		},
		"create short":    func() error { _, err := DecodeWatchCreate(good[:5]); return err },
		"cancel trailing": func() error { _, err := DecodeWatchCancel(make([]byte, 9)); return err },
		"created short":   func() error { _, err := DecodeWatchCreated(make([]byte, 15)); return err },
		"event kind": func() error {
			_, err := DecodeWatchEvent(append(make([]byte, 8), 9, 0, 0, 0, 0, 0, 0, 0, 0))
			return err
		},
		"event trailing": func() error {
			_, err := DecodeWatchEvent(append(AppendWatchEvent(nil, &WatchEvent{Kind: WatchProgress}), 1))
			return err
		},
		"events trailing": func() error {
			_, err := DecodeWatchEvent(append(AppendWatchEvent(nil, &WatchEvent{Kind: WatchEvents}), 1))
			return err
		},
		"consumer action": func() error {
			_, err := DecodeCDCConsumer(AppendCDCConsumer(nil, CDCConsumerRequest{Action: 3, Consumer: "c"}))
			return err
		},
		"consumer trailing": func() error {
			_, err := DecodeCDCConsumer(append(AppendCDCConsumer(nil, CDCConsumerRequest{Action: 1, Consumer: "c"}), 0))
			return err
		},
		"checkpoint seq cut": func() error {
			_, _, _, err := DecodeCDCCheckpointAt(append(AppendCDCCheckpoint(nil, "c"), 1, 2))
			return err
		},
	}
	for name, f := range bad {
		if err := f(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	c, seq, has, err := DecodeCDCCheckpointAt(append(AppendCDCCheckpointAt(nil, "c", 3), 9, 9))
	if c != "c" || seq != 3 || !has || err != nil {
		t.Fatalf("checkpoint with trailing bytes: %q %d %v %v", c, seq, has, err)
	}
}

// TestCDCConsumerNames: the original's name rules and texts.
func TestCDCConsumerNames(t *testing.T) {
	for name, want := range map[string]string{
		"backup": "", "a-b_C9": "", strings.Repeat("x", 64): "",
		"": MsgCDCConsumerLength, strings.Repeat("x", 65): MsgCDCConsumerLength,
		"a b": MsgCDCConsumerChars, "é": MsgCDCConsumerChars, "a/b": MsgCDCConsumerChars,
	} {
		if got := ValidCDCConsumer(name); got != want {
			t.Errorf("%q: %q, want %q", name, got, want)
		}
	}
	for _, msg := range []string{fmt.Sprintf(MsgCDCCompacted, 5, 9), fmt.Sprintf(MsgWatchCompacted, 5, 9)} {
		if p, o, ok := ParseCDCCompacted(msg); !ok || p != 5 || o != 9 {
			t.Errorf("%q: %d %d %v", msg, p, o, ok)
		}
	}
}
