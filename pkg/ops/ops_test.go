package ops

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateRefusesBadInput(t *testing.T) {
	big := bytes.Repeat([]byte("x"), DefaultMaxItemBytes)
	cases := []struct {
		name string
		op   Op
		want error
	}{
		{"empty key", Set("", []byte("v"), 0), ErrEmptyKey},
		{"key over 250 bytes", Set(strings.Repeat("k", 251), nil, 0), ErrKeyTooLong},
		{"key with space", Set("a b", nil, 0), ErrKeyBadChar},
		{"key with tab", Set("a\tb", nil, 0), ErrKeyBadChar},
		{"key with newline", Delete("a\nb"), ErrKeyBadChar},
		{"key with control char", Set("a\x01b", nil, 0), ErrKeyBadChar},
		{"key with DEL", Set("a\x7fb", nil, 0), ErrKeyBadChar},
		{"key not UTF-8", Set("a\xffb", nil, 0), ErrKeyBadChar},
		{"value over item size", Set("k", big, 0), ErrValueTooLarge},
		{"negative expiration", Set("k", nil, -time.Second), ErrNegativeExpiry},
		{"expiration over 30 days", Set("k", nil, 31*24*time.Hour), ErrExpiryTooLong},
		{"unknown flags", Op{Kind: KindSet, Key: "k", Flags: 4}, ErrUnknownFlags},
		{"unknown kind", Op{Kind: 9, Key: "k"}, ErrUnknownKind},
		{"delete with value", Op{Kind: KindDelete, Key: "k", Value: []byte("v")}, ErrValueOnDelete},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.op.Validate(Limits{})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	max := DefaultMaxItemBytes - ItemOverheadBytes - 1
	for _, op := range []Op{
		Set(strings.Repeat("k", 250), []byte("v"), 0),
		Set("k", bytes.Repeat([]byte("x"), max), 0),
		Set("ключ", nil, 30*24*time.Hour),
		Delete("k"),
	} {
		if err := op.Validate(Limits{}); err != nil {
			t.Errorf("%s %q: %v", op.Kind, op.Key, err)
		}
	}
}

func TestValidateBatch(t *testing.T) {
	if err := ValidateBatch(nil, Limits{}); !errors.Is(err, ErrEmptyBatch) {
		t.Fatalf("empty batch: %v", err)
	}
	err := ValidateBatch([]Op{Set("a", nil, 0), Set("", nil, 0)}, Limits{})
	if !errors.Is(err, ErrEmptyKey) || !strings.Contains(err.Error(), "operation 1") {
		t.Fatalf("bad second op: %v", err)
	}
	half := bytes.Repeat([]byte("x"), 700<<10)
	err = ValidateBatch([]Op{Set("a", half, 0), Set("b", half, 0)}, Limits{})
	if !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("large batch: %v", err)
	}
}

func TestParseKind(t *testing.T) {
	if k, err := ParseKind("delete"); err != nil || k != KindDelete {
		t.Fatalf("delete: %v %v", k, err)
	}
	if _, err := ParseKind("incr"); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("incr: %v", err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	b := &Batch{Name: "agent-1", Incarnation: 42, ID: "abc", Index: 5, Ops: []Op{
		Set("k1", []byte("v1"), 90*time.Second),
		Delete("k2"),
		Set("k3", bytes.Repeat([]byte{0, 1, 2}, 1000), 0),
	}}
	got, err := DecodeBatch(b.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != b.Name || got.Incarnation != b.Incarnation || got.ID != b.ID || got.Index != b.Index || len(got.Ops) != len(b.Ops) {
		t.Fatalf("got %+v", got)
	}
	for i := range b.Ops {
		w, g := b.Ops[i], got.Ops[i]
		if w.Kind != g.Kind || w.Key != g.Key || !bytes.Equal(w.Value, g.Value) || w.Expiration != g.Expiration {
			t.Errorf("op %d: got %+v want %+v", i, g, w)
		}
	}
}

func TestRecordIndex(t *testing.T) {
	b := &Batch{Name: "n", Incarnation: 9, ID: "id", Index: 3, Ops: []Op{Delete("k")}}
	rec := b.Encode()
	if got, err := RecordIndex(rec); err != nil || got != 3 {
		t.Fatalf("RecordIndex = %d, %v; want 3", got, err)
	}
	if err := SetRecordIndex(rec, 70000); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(rec)
	if err != nil || got.Index != 70000 || got.Name != "n" || got.ID != "id" || len(got.Ops) != 1 {
		t.Fatalf("after SetRecordIndex: %+v, %v", got, err)
	}
	// A record of the first format (no index) decodes with index zero.
	v1 := append([]byte("cb1\x00"), rec[len(recordMagic)+indexBytes:]...)
	old, err := DecodeBatch(v1)
	if err != nil || old.Index != 0 || old.Name != "n" || len(old.Ops) != 1 {
		t.Fatalf("v1 record: %+v, %v", old, err)
	}
	if err := SetRecordIndex(v1, 1); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("SetRecordIndex on a v1 record = %v, want ErrCorruptRecord", err)
	}
}

// A batch without a trace context is stored exactly as the versions that
// read only "cb1" and "cb2" records stored it, so that a node of such a
// version applies it during a rolling upgrade.
func TestRecordWithoutTraceContextIsVersion2(t *testing.T) {
	b := &Batch{Name: "agent-1", Incarnation: 9, ID: "id", Index: 3, Ops: []Op{Set("k", []byte("v"), 90*time.Second), Delete("d")}}
	// Encoded by the version before trace contexts were carried.
	const v2 = "6362320000000003076167656e742d31120269640201016b01768090d8c69e0500020164000000"
	if got := hex.EncodeToString(b.Encode()); got != v2 {
		t.Fatalf("Encode = %s, want the version 2 record %s", got, v2)
	}
}

// A batch with a trace context is a "cb3" record: it round-trips, keeps
// its index settable, and fields of a later version are skipped.
func TestRecordWithTraceContext(t *testing.T) {
	tc := TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", State: "congo=t61rcWkgMzE"}
	b := &Batch{Name: "n", Incarnation: 9, ID: "id", Index: 2, Ops: []Op{Set("k", []byte("v"), 0)}, Trace: tc}
	rec := b.Encode()
	if string(rec[:len(recordMagic)]) != "cb3\x00" {
		t.Fatalf("header %q, want cb3", rec[:len(recordMagic)])
	}
	if err := SetRecordIndex(rec, 7); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(rec)
	if err != nil || got.Trace != tc || got.Index != 7 || got.Name != "n" || len(got.Ops) != 1 || string(got.Ops[0].Value) != "v" {
		t.Fatalf("DecodeBatch = %+v, %v", got, err)
	}
	if idx, err := RecordIndex(rec); err != nil || idx != 7 {
		t.Fatalf("RecordIndex = %d, %v", idx, err)
	}
	// Only a state, or only a parent.
	for _, tc := range []TraceContext{{Parent: tc.Parent}, {State: tc.State}} {
		got, err := DecodeBatch((&Batch{Name: "n", ID: "i", Ops: b.Ops, Trace: tc}).Encode())
		if err != nil || got.Trace != tc {
			t.Errorf("trace context %+v: got %+v, %v", tc, got, err)
		}
	}
	// A later version's field (tag 9) is skipped, after ours or between
	// them (the state field, last, is its tag, length and value).
	later := appendString(binary.AppendUvarint(nil, 9), "later")
	stateAt := len(rec) - (2 + len(tc.State))
	between := append(append(append([]byte{}, rec[:stateAt]...), later...), rec[stateAt:]...)
	for _, in := range [][]byte{append(append([]byte{}, rec...), later...), between} {
		got, err := DecodeBatch(in)
		if err != nil || got.Trace != tc || got.Index != 7 {
			t.Errorf("with a later field: %+v, %v", got, err)
		}
	}
	// Fields are a "cb3" record's only: a "cb2" record with them is corrupt.
	v2 := append([]byte("cb2\x00"), rec[len(recordMagic):]...)
	if _, err := DecodeBatch(v2); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("cb2 record with fields = %v, want ErrCorruptRecord", err)
	}
	// A truncated field is corrupt.
	for i := stateAt + 1; i < len(rec); i++ {
		if _, err := DecodeBatch(rec[:i]); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("truncated at %d of %d: %v, want ErrCorruptRecord", i, len(rec), err)
		}
	}
}

func TestDecodeRejectsCorruptRecords(t *testing.T) {
	good := (&Batch{Name: "n", Incarnation: 1, ID: "i", Ops: []Op{Set("k", []byte("value"), 0)}}).Encode()
	inputs := [][]byte{nil, []byte("{}"), []byte("cb1\x00"), good[:len(good)-1], append(append([]byte{}, good...), 0)}
	// Every truncation of a valid record is refused, never a panic.
	for i := range good {
		inputs = append(inputs, good[:i])
	}
	for _, in := range inputs {
		if _, err := DecodeBatch(in); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("DecodeBatch(%q) = %v, want ErrCorruptRecord", in, err)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add((&Batch{Name: "n", Incarnation: 7, ID: "x", Ops: []Op{Set("k", []byte("v"), time.Second), Delete("d")}}).Encode())
	f.Add([]byte("cb1\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Add((&Batch{Name: "n", Incarnation: 7, ID: "x", Ops: []Op{Delete("d")}, Trace: TraceContext{Parent: "p", State: "s"}}).Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		again, err := DecodeBatch(b.Encode())
		if err != nil || again.Name != b.Name || again.Index != b.Index || len(again.Ops) != len(b.Ops) || again.Trace != b.Trace {
			t.Fatalf("re-encoding a decoded record failed: %v", err)
		}
	})
}
