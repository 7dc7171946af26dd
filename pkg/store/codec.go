package store

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Records are stored in a compact binary form, each value starting with
// its own format version (recordV1), inside buckets whose layout the
// schema version names. Integers are varints, strings and byte slices are
// length-prefixed, times are Unix nanoseconds (0 for the zero time). The
// largest field of each record (input, output) comes last.
//
// A task is split in two values: its spec (what was asked, input included:
// written once) and its status (rewritten by every Update), so that an
// update never rewrites the pages holding a large input.

const recordV1 = 1

// errDecode is wrapped, with ErrCorrupt, by every decoding error.
var errDecode = errors.New("malformed record")

type status struct {
	state   State
	attempt int
	created time.Time
	updated time.Time
	peer    peer.ID
	tried   []peer.ID
	err     string
	result  *Result
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendSpec(b []byte, r *TaskRecord) []byte {
	b = append(b, recordV1)
	b = appendString(b, r.Skill)
	b = appendString(b, r.Version)
	b = append(b, byte(r.InputKind), r.Priority)
	b = binary.AppendVarint(b, int64(r.Timeout))
	b = binary.AppendUvarint(b, math.Float64bits(r.MinTrust))
	b = binary.AppendUvarint(b, uint64(r.MaxRetries))
	b = appendString(b, string(r.Requester))
	b = appendTime(b, r.CreatedAt)
	return appendBytes(b, r.Input)
}

func appendResult(b []byte, r *Result) []byte {
	if r == nil {
		return append(b, 0)
	}
	ok := byte(1)
	if r.Success {
		ok = 2
	}
	b = append(b, ok)
	b = binary.AppendVarint(b, int64(r.Code))
	b = binary.AppendVarint(b, int64(r.Duration))
	b = appendString(b, string(r.ExecutedBy))
	b = appendTime(b, r.FinishedAt)
	b = appendString(b, r.Error)
	return appendBytes(b, r.Output)
}

func appendStatus(b []byte, s *status) []byte {
	b = append(b, recordV1, byte(s.state))
	b = binary.AppendUvarint(b, uint64(s.attempt))
	b = appendTime(b, s.created)
	b = appendTime(b, s.updated)
	b = appendString(b, string(s.peer))
	b = binary.AppendUvarint(b, uint64(len(s.tried)))
	for _, p := range s.tried {
		b = appendString(b, string(p))
	}
	b = appendString(b, s.err)
	return appendResult(b, s.result)
}

func appendRemote(b []byte, r *RemoteRecord) []byte {
	b = append(b, recordV1)
	b = appendString(b, r.Skill)
	b = appendString(b, r.Version)
	b = binary.AppendUvarint(b, uint64(r.Attempt))
	b = appendTime(b, r.Deadline)
	b = appendTime(b, r.ReceivedAt)
	delivered := byte(0)
	if r.Delivered {
		delivered = 1
	}
	b = append(b, byte(r.State), delivered)
	b = appendTime(b, r.UpdatedAt)
	return appendResult(b, r.Result)
}

// decoder reads what the append functions write. The first problem sets
// bad; later reads return zero values.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) byte() byte {
	if d.bad || len(d.b) == 0 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.bad {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.uvarint()
	if v > math.MaxInt32 {
		d.bad = true
		return 0
	}
	return int(v)
}

func (d *decoder) time() time.Time {
	if n := d.varint(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// raw returns a length-prefixed field without copying it.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.raw()) }

// bytes returns a copy of a length-prefixed field; nil if it is empty.
func (d *decoder) bytes() []byte {
	v := d.raw()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) version() {
	if v := d.byte(); v != recordV1 {
		d.bad = true
	}
}

func (d *decoder) state() State {
	s := State(d.byte())
	if !s.Valid() {
		d.bad = true
	}
	return s
}

func (d *decoder) done() error {
	if d.bad || len(d.b) != 0 {
		return errDecode
	}
	return nil
}

// decodeSpec fills the spec fields of r (ID excepted) from b.
func decodeSpec(b []byte, r *TaskRecord) error {
	d := decoder{b: b}
	d.version()
	r.Skill = d.string()
	r.Version = d.string()
	r.InputKind = grid.InputKind(d.byte())
	r.Priority = d.byte()
	r.Timeout = time.Duration(d.varint())
	r.MinTrust = math.Float64frombits(d.uvarint())
	r.MaxRetries = d.int()
	r.Requester = peer.ID(d.string())
	r.CreatedAt = d.time()
	r.Input = d.bytes()
	return d.done()
}

func (d *decoder) result() *Result {
	flag := d.byte()
	switch flag {
	case 0:
		return nil
	case 1, 2:
	default:
		d.bad = true
		return nil
	}
	r := &Result{Success: flag == 2}
	r.Code = grid.ErrorCode(d.varint())
	r.Duration = time.Duration(d.varint())
	r.ExecutedBy = peer.ID(d.string())
	r.FinishedAt = d.time()
	r.Error = d.string()
	r.Output = d.bytes()
	return r
}

func decodeStatus(b []byte, s *status) error {
	d := decoder{b: b}
	d.version()
	s.state = d.state()
	s.attempt = d.int()
	s.created = d.time()
	s.updated = d.time()
	s.peer = peer.ID(d.string())
	n := d.int()
	if n > maxTried {
		d.bad = true
		n = 0
	}
	s.tried = nil
	if n > 0 {
		s.tried = make([]peer.ID, n)
		for i := range s.tried {
			s.tried[i] = peer.ID(d.string())
		}
	}
	s.err = d.string()
	s.result = d.result()
	return d.done()
}

// decodeRemote fills the fields of r other than From and ID from b.
func decodeRemote(b []byte, r *RemoteRecord) error {
	d := decoder{b: b}
	d.version()
	r.Skill = d.string()
	r.Version = d.string()
	r.Attempt = d.int()
	r.Deadline = d.time()
	r.ReceivedAt = d.time()
	r.State = d.state()
	r.Delivered = d.byte() == 1
	r.UpdatedAt = d.time()
	r.Result = d.result()
	return d.done()
}
