package wasm

import "github.com/cortexgrid/cortexd/pkg/reputation"

// A small assembler for hand-written test modules: each module below is
// written as the WAT in its comment, encoded by hand in the binary format.

func skillID(s string) reputation.SkillID { return reputation.SkillID(s) }

func uleb(v uint64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func str(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func vec(items ...[]byte) []byte {
	b := uleb(uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(body)))...), body...)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

const i32 = 0x7f

// Opcodes used below.
func i32c(v int32) []byte  { return append([]byte{0x41}, sleb(int64(v))...) }
func call(f uint32) []byte { return append([]byte{0x10}, uleb(uint64(f))...) }
func br(d uint32) []byte   { return append([]byte{0x0c}, uleb(uint64(d))...) }
func brIf(d uint32) []byte { return append([]byte{0x0d}, uleb(uint64(d))...) }
func store() []byte        { return []byte{0x36, 0x02, 0x00} } // i32.store align=4
func load() []byte         { return []byte{0x28, 0x02, 0x00} } // i32.load align=4
func loopBegin() []byte    { return []byte{0x03, 0x40} }
func ifBegin() []byte      { return []byte{0x04, 0x40} }
func end() []byte          { return []byte{0x0b} }
func drop() []byte         { return []byte{0x1a} }
func memGrow() []byte      { return []byte{0x40, 0x00} }
func memSize() []byte      { return []byte{0x3f, 0x00} }
func i32ne() []byte        { return []byte{0x47} }
func unreachable() []byte  { return []byte{0x00} }
func funcType(params, results int) []byte {
	p := make([][]byte, params)
	for i := range p {
		p[i] = []byte{i32}
	}
	r := make([][]byte, results)
	for i := range r {
		r[i] = []byte{i32}
	}
	return cat([]byte{0x60}, vec(p...), vec(r...))
}

// wasiModule builds a module that imports fd_read (0), fd_write (1) and
// proc_exit (2) from WASI, has one memory of minPages (maxPages if more
// than 0), exported as "memory" unless noMemExport, and one function
// (index 3) with body, exported as start (none if start is empty).
// Types: 0 (i32 i32 i32 i32)->i32, 1 ()->(), 2 (i32)->().
type modSpec struct {
	importModule string // default wasi_snapshot_preview1
	minPages     uint32
	maxPages     uint32
	noMemExport  bool
	start        string
	body         []byte
}

func buildModule(s modSpec) []byte {
	imod := s.importModule
	if imod == "" {
		imod = "wasi_snapshot_preview1"
	}
	imp := func(name string, typ uint32) []byte {
		return cat(str(imod), str(name), []byte{0x00}, uleb(uint64(typ)))
	}
	limits := cat([]byte{0x00}, uleb(uint64(s.minPages)))
	if s.maxPages > 0 {
		limits = cat([]byte{0x01}, uleb(uint64(s.minPages)), uleb(uint64(s.maxPages)))
	}
	var exports [][]byte
	if !s.noMemExport {
		exports = append(exports, cat(str("memory"), []byte{0x02, 0x00}))
	}
	if s.start != "" {
		exports = append(exports, cat(str(s.start), []byte{0x00, 0x03}))
	}
	code := cat([]byte{0x00}, s.body, end()) // no locals
	return cat(
		wasmMagic,
		section(1, vec(funcType(4, 1), funcType(0, 0), cat([]byte{0x60}, vec([]byte{i32}), vec()))),
		section(2, vec(imp("fd_read", 0), imp("fd_write", 0), imp("proc_exit", 2))),
		section(3, vec(uleb(1))),
		section(5, vec(limits)),
		section(7, vec(exports...)),
		section(10, vec(cat(uleb(uint64(len(code))), code))),
	)
}

// echoModule copies stdin to stdout, 64 KiB at a time: the smallest useful
// WASI command, for the per-task floor.
//
//	(i32.store (i32.const 0) (i32.const 16))          ;; iovec.buf = 16
//	(loop
//	  (i32.store (i32.const 4) (i32.const 65520))     ;; iovec.len
//	  (i32.store (i32.const 8) (i32.const 0))         ;; nread = 0
//	  (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
//	  (if (i32.load (i32.const 8))
//	    (then
//	      (i32.store (i32.const 4) (i32.load (i32.const 8)))
//	      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
//	      (br 1))))
func echoModule() []byte {
	body := cat(
		i32c(0), i32c(16), store(),
		loopBegin(),
		i32c(4), i32c(65520), store(),
		i32c(8), i32c(0), store(),
		i32c(0), i32c(0), i32c(1), i32c(8), call(0), drop(),
		i32c(8), load(), ifBegin(),
		i32c(4), i32c(8), load(), store(),
		i32c(1), i32c(0), i32c(1), i32c(12), call(1), drop(),
		br(1),
		end(),
		end(),
	)
	return buildModule(modSpec{minPages: 1, start: "_start", body: body})
}

// spinModule loops forever without calling the host: (loop (br 0)).
func spinModule() []byte {
	return buildModule(modSpec{minPages: 1, start: "_start", body: cat(loopBegin(), br(0), end())})
}

// countModule counts down from n in a tight loop and exits 0: the tight
// loop of wazero issue 2466, for measuring WithCloseOnContextDone.
//
//	(i32.store (i32.const 0) (i32.const n))
//	(loop (br_if 0 (i32.ne (i32.const 0)
//	  (i32.store (i32.const 0) (i32.sub (i32.load (i32.const 0)) (i32.const 1))) ...)))
//
// It keeps the counter in memory (there are no locals in buildModule).
func countModule(n int32) []byte {
	body := cat(
		i32c(0), i32c(n), store(),
		loopBegin(),
		i32c(0), i32c(0), load(), i32c(1), []byte{0x6b}, store(), // mem[0] -= 1
		i32c(0), load(), i32c(0), i32ne(), brIf(0),
		end(),
	)
	return buildModule(modSpec{minPages: 1, start: "_start", body: body})
}

// growModule grows memory one page at a time until memory.grow fails, then
// exits with the number of pages it has: (loop (br_if 0 (i32.ne
// (memory.grow (i32.const 1)) (i32.const -1)))) (call $proc_exit (memory.size)).
func growModule() []byte {
	body := cat(
		loopBegin(), i32c(1), memGrow(), i32c(-1), i32ne(), brIf(0), end(),
		memSize(), call(2),
	)
	return buildModule(modSpec{minPages: 1, start: "_start", body: body})
}

// exitModule writes "boom" to stderr and exits with code 7.
func exitModule() []byte {
	body := cat(
		i32c(16), i32c(0x6d6f6f62), store(), // "boom" at 16
		i32c(0), i32c(16), store(), i32c(4), i32c(4), store(), // iovec {16, 4}
		i32c(2), i32c(0), i32c(1), i32c(8), call(1), drop(),
		i32c(7), call(2),
	)
	return buildModule(modSpec{minPages: 1, start: "_start", body: body})
}

// trapModule executes unreachable.
func trapModule() []byte {
	return buildModule(modSpec{minPages: 1, start: "_start", body: unreachable()})
}
