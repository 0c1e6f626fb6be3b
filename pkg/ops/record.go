package ops

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Batch is what one submission stores in etcd: the operations, who sent
// them, and an identifier chosen by the submitter so that a submission whose
// reply was lost can be looked up instead of being sent twice.
type Batch struct {
	// Name is the caller's registration name.
	Name string
	// Incarnation is the incarnation token (etcd revision of the registration).
	Incarnation int64
	// ID is unique per submission of an incarnation.
	ID string
	// Ops are applied in the order given.
	Ops []Op
}

// ErrCorruptRecord is returned when a stored record cannot be decoded.
var ErrCorruptRecord = errors.New("ops: record cannot be decoded")

const recordMagic = "cb1\x00"

func encodedOpSize(o Op) int {
	return 1 + binary.MaxVarintLen64*4 + len(o.Key) + len(o.Value)
}

// Encode returns the binary record of the batch.
func (b *Batch) Encode() []byte {
	n := len(recordMagic) + binary.MaxVarintLen64*4 + len(b.Name) + len(b.ID)
	for _, o := range b.Ops {
		n += encodedOpSize(o)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, recordMagic...)
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
	return buf
}

// DecodeBatch decodes a record made by Encode. Any malformed input returns
// an error wrapping ErrCorruptRecord; it never panics.
func DecodeBatch(data []byte) (*Batch, error) {
	d := decoder{buf: data}
	if len(data) < len(recordMagic) || string(data[:len(recordMagic)]) != recordMagic {
		return nil, fmt.Errorf("%w: bad header", ErrCorruptRecord)
	}
	d.buf = d.buf[len(recordMagic):]
	b := &Batch{}
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
	if d.err == nil && len(d.buf) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return b, nil
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
