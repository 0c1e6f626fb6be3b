package ops

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Batch is what one submission stores in etcd: the operations, who sent
// them, and an identifier chosen by the submitter so that a submission whose
// reply was lost can be looked up, not sent twice.
type Batch struct {
	// Name is the caller's registration name.
	Name string
	// Incarnation is the incarnation token (etcd revision of the registration).
	Incarnation int64
	// ID is unique per submission of an incarnation.
	ID string
	// Ops are applied in the order given.
	Ops []Op
	// Index is the batch's position among the batches stored by one etcd
	// transaction (group commit); with the transaction's revision it makes
	// the batch's token. It is zero for a batch stored alone.
	Index uint32
	// Trace is the W3C trace context of the submission that stored the
	// batch, so that the leader's apply of it joins the submission's
	// trace; the zero value (most batches: tracing off, or the submission
	// not sampled) is stored as nothing at all.
	Trace TraceContext
}

// TraceContext is a W3C Trace Context (https://www.w3.org/TR/trace-context/)
// as its two HTTP headers carry it. The record stores the strings as given:
// whoever reads them parses them, and a malformed one only loses the link
// between the submission's trace and the apply, never the batch.
type TraceContext struct {
	// Parent is the traceparent header, "00-<trace id>-<span id>-<flags>".
	Parent string
	// State is the tracestate header, often empty.
	State string
}

// IsZero reports whether tc carries nothing.
func (tc TraceContext) IsZero() bool { return tc.Parent == "" && tc.State == "" }

// ErrCorruptRecord is returned when a stored record cannot be decoded.
var ErrCorruptRecord = errors.New("ops: record cannot be decoded")

// Record headers. A "cb2" record carries the batch index as four
// big-endian bytes right after the header, so that a record can be given
// its index after it was encoded (SetRecordIndex) without copying it. "cb1"
// records, which have no index, decode with index zero.
//
// A "cb3" record is a "cb2" record with a different header and optional
// fields after the operations: each a tag, a length and that many bytes
// (see the field tags below). A reader skips the tags it does not know, so
// that a later version can add a field that readers may ignore without a
// new header; a field that changes what applying the batch does needs a new
// header, which earlier readers then refuse. Encode writes "cb3" only for a
// batch with optional fields (a trace context) and "cb2" otherwise, byte
// for byte what the versions that know only "cb1" and "cb2" read: nodes of
// those versions apply every batch stored without a trace context.
const (
	recordMagicV1 = "cb1\x00"
	recordMagicV2 = "cb2\x00"
	recordMagic   = "cb3\x00"
	indexBytes    = 4
)

// RecordVersion is the newest record version this package reads and
// writes: the "cb3" header. It reads every earlier one (1 and 2).
const RecordVersion = 3

// Tags of a "cb3" record's optional fields.
const (
	fieldTraceParent = 1 // TraceContext.Parent
	fieldTraceState  = 2 // TraceContext.State
)

func encodedOpSize(o Op) int {
	return 1 + binary.MaxVarintLen64*4 + len(o.Key) + len(o.Value)
}

// Encode returns the binary record of the batch: a "cb2" record, or a
// "cb3" record when the batch carries a trace context (see RecordVersion).
func (b *Batch) Encode() []byte {
	n := len(recordMagic) + indexBytes + binary.MaxVarintLen64*4 + len(b.Name) + len(b.ID)
	for _, o := range b.Ops {
		n += encodedOpSize(o)
	}
	magic := recordMagicV2
	if !b.Trace.IsZero() {
		magic = recordMagic
		n += 2*2*binary.MaxVarintLen64 + len(b.Trace.Parent) + len(b.Trace.State)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, magic...)
	buf = binary.BigEndian.AppendUint32(buf, b.Index)
	buf = appendString(buf, b.Name)
	buf = binary.AppendVarint(buf, b.Incarnation)
	buf = appendString(buf, b.ID)
	buf = binary.AppendUvarint(buf, uint64(len(b.Ops)))
	for _, o := range b.Ops {
		buf = append(buf, byte(o.Kind))
		buf = appendString(buf, o.Key)
		buf = binary.AppendUvarint(buf, uint64(len(o.Value)))
		buf = append(buf, o.Value...)
		buf = binary.AppendVarint(buf, int64(o.Expiration))
		buf = binary.AppendUvarint(buf, uint64(o.Flags))
	}
	if magic == recordMagic {
		buf = appendField(buf, fieldTraceParent, b.Trace.Parent)
		buf = appendField(buf, fieldTraceState, b.Trace.State)
	}
	return buf
}

// appendField appends an optional field of a "cb3" record; an empty value
// is left out.
func appendField(buf []byte, tag uint64, value string) []byte {
	if value == "" {
		return buf
	}
	buf = binary.AppendUvarint(buf, tag)
	return appendString(buf, value)
}

// DecodeBatch decodes a record made by Encode. Any malformed input returns
// an error wrapping ErrCorruptRecord; it never panics.
func DecodeBatch(data []byte) (*Batch, error) {
	version, index, body, err := splitHeader(data)
	if err != nil {
		return nil, err
	}
	d := decoder{buf: body}
	b := &Batch{Index: index}
	b.Name = d.string()
	b.Incarnation = d.varint()
	b.ID = d.string()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.buf)) {
		d.fail("operation count")
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var o Op
		o.Kind = Kind(d.byte())
		o.Key = d.string()
		o.Value = d.bytes()
		o.Expiration = time.Duration(d.varint())
		flags := d.uvarint()
		if flags > 0xffffffff {
			d.fail("flags")
		}
		o.Flags = uint32(flags)
		b.Ops = append(b.Ops, o)
	}
	for version >= 3 && d.err == nil && len(d.buf) != 0 {
		switch tag := d.uvarint(); tag {
		case fieldTraceParent:
			b.Trace.Parent = d.string()
		case fieldTraceState:
			b.Trace.State = d.string()
		default:
			d.skip() // a field of a later version that readers may ignore
		}
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return b, nil
}

// splitHeader checks a record's header and returns its version, its batch
// index and the rest of the record.
func splitHeader(data []byte) (version int, index uint32, body []byte, err error) {
	if v := indexedVersion(data); v != 0 {
		return v, binary.BigEndian.Uint32(data[len(recordMagic):]), data[len(recordMagic)+indexBytes:], nil
	}
	if len(data) >= len(recordMagicV1) && string(data[:len(recordMagicV1)]) == recordMagicV1 {
		return 1, 0, data[len(recordMagicV1):], nil
	}
	return 0, 0, nil, fmt.Errorf("%w: bad header", ErrCorruptRecord)
}

// indexedVersion returns the version of a record whose header carries an
// index ("cb2" or "cb3", which have headers of one length), or zero.
func indexedVersion(data []byte) int {
	if len(data) < len(recordMagic)+indexBytes {
		return 0
	}
	switch string(data[:len(recordMagic)]) {
	case recordMagic:
		return 3
	case recordMagicV2:
		return 2
	}
	return 0
}

// RecordIndex returns the batch index of an encoded record without decoding
// the rest of it.
func RecordIndex(record []byte) (uint32, error) {
	_, index, _, err := splitHeader(record)
	return index, err
}

// SetRecordIndex sets the batch index of a record made by Encode, in place.
func SetRecordIndex(record []byte, index uint32) error {
	if indexedVersion(record) == 0 {
		return fmt.Errorf("%w: bad header", ErrCorruptRecord)
	}
	binary.BigEndian.PutUint32(record[len(recordMagic):], index)
	return nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorruptRecord, what)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("length")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("length")
		return nil
	}
	out := make([]byte, n)
	copy(out, d.buf[:n])
	d.buf = d.buf[n:]
	return out
}

func (d *decoder) string() string {
	return string(d.bytes())
}

// skip passes over a length-prefixed field without copying it.
func (d *decoder) skip() {
	n := d.uvarint()
	if d.err != nil {
		return
	}
	if n > uint64(len(d.buf)) {
		d.fail("length")
		return
	}
	d.buf = d.buf[n:]
}
