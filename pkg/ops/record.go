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
}

// ErrCorruptRecord is returned when a stored record cannot be decoded.
var ErrCorruptRecord = errors.New("ops: record cannot be decoded")

// Record headers. A "cb2" record carries the batch index as four
// big-endian bytes right after the header, so that a record can be given
// its index after it was encoded (SetRecordIndex) without copying it. "cb1"
// records, which have no index, decode with index zero.
const (
	recordMagicV1 = "cb1\x00"
	recordMagic   = "cb2\x00"
	indexBytes    = 4
)

func encodedOpSize(o Op) int {
	return 1 + binary.MaxVarintLen64*4 + len(o.Key) + len(o.Value)
}

// Encode returns the binary record of the batch.
func (b *Batch) Encode() []byte {
	n := len(recordMagic) + indexBytes + binary.MaxVarintLen64*4 + len(b.Name) + len(b.ID)
	for _, o := range b.Ops {
		n += encodedOpSize(o)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, recordMagic...)
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
	return buf
}

// DecodeBatch decodes a record made by Encode. Any malformed input returns
// an error wrapping ErrCorruptRecord; it never panics.
func DecodeBatch(data []byte) (*Batch, error) {
	index, body, err := splitHeader(data)
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
	if d.err == nil && len(d.buf) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return b, nil
}

// splitHeader checks a record's header and returns its batch index and the
// rest of the record.
func splitHeader(data []byte) (uint32, []byte, error) {
	switch {
	case len(data) >= len(recordMagic)+indexBytes && string(data[:len(recordMagic)]) == recordMagic:
		return binary.BigEndian.Uint32(data[len(recordMagic):]), data[len(recordMagic)+indexBytes:], nil
	case len(data) >= len(recordMagicV1) && string(data[:len(recordMagicV1)]) == recordMagicV1:
		return 0, data[len(recordMagicV1):], nil
	}
	return 0, nil, fmt.Errorf("%w: bad header", ErrCorruptRecord)
}

// RecordIndex returns the batch index of an encoded record without decoding
// the rest of it.
func RecordIndex(record []byte) (uint32, error) {
	index, _, err := splitHeader(record)
	return index, err
}

// SetRecordIndex sets the batch index of a record made by Encode, in place.
func SetRecordIndex(record []byte, index uint32) error {
	if len(record) < len(recordMagic)+indexBytes || string(record[:len(recordMagic)]) != recordMagic {
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
