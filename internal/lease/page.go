package lease

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PageSize is the size of the stats page, exactly.
const PageSize = 4096

// Magic marks a stats page that its worker has set up ("taskdst1", little-endian u64).
const Magic = 0x7461736b64737431

// Offsets of the stats page's fields (all little-endian u64, 8-byte aligned). See the
// package documentation of docs/worker-protocol.md, "The stats page".
const (
	OffSeq      = 0   // seqlock: odd while the worker writes
	OffMagic    = 8   // Magic, written once at start
	OffCalls    = 16  // calls started, ever (any stream)
	OffDone     = 24  // calls answered, ever
	OffCurID    = 32  // protocol id of the call running now, 0: none
	OffCurStart = 40  // when it started, Unix nanoseconds
	OffLease    = 48  // lease number it came from, 0: stdin
	OffErrs     = 56  // err replies, ever
	OffMethodN  = 64  // length of the method name (low 32 bits)
	OffMethod   = 72  // the method name, MaxMethod bytes
	MaxMethod   = 192 // longest method name kept (longer ones are cut)
	methodWords = MaxMethod / 8
)

// Page is a mapped stats page. The worker writes it (Init, Begin, End: one writer, the
// worker's serving goroutine); taskd reads it (Read: any number of readers, concurrently
// with the writer). Every word is accessed atomically, so a torn read is detected by the
// seqlock instead of being undefined.
type Page struct {
	mem []byte
}

// NewStatsFile returns a new memfd of PageSize bytes (close-on-exec), for a worker's
// stats page.
func NewStatsFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("taskd-stats", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("lease: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, PageSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lease: sizing the stats page: %w", err)
	}
	return os.NewFile(uintptr(fd), "taskd-stats"), nil
}

// Map maps the stats page in fd (MAP_SHARED): writable for the worker, read-only for taskd.
// The descriptor may be closed afterwards; Unmap releases the mapping.
func Map(fd int, writable bool) (*Page, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("lease: stats page: %w", err)
	}
	if st.Size < PageSize {
		return nil, fmt.Errorf("lease: stats page is %d bytes, want %d", st.Size, PageSize)
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := unix.Mmap(fd, 0, PageSize, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("lease: mapping the stats page: %w", err)
	}
	return &Page{mem: mem}, nil
}

// Unmap releases the mapping. The Page must not be used afterwards.
func (p *Page) Unmap() error { return unix.Munmap(p.mem) }

func (p *Page) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&p.mem[off])) }

// Init marks the page as set up (the worker calls it once, before announcing leases).
func (p *Page) Init() { atomic.StoreUint64(p.word(OffMagic), Magic) }

// Begin publishes the start of call id (from lease, 0: stdin) of method at now.
func (p *Page) Begin(id, lease uint64, method string, now time.Time) {
	seq := p.word(OffSeq)
	atomic.AddUint64(seq, 1) // odd: writing
	atomic.AddUint64(p.word(OffCalls), 1)
	atomic.StoreUint64(p.word(OffCurID), id)
	atomic.StoreUint64(p.word(OffCurStart), uint64(now.UnixNano()))
	atomic.StoreUint64(p.word(OffLease), lease)
	n := min(len(method), MaxMethod)
	atomic.StoreUint64(p.word(OffMethodN), uint64(n))
	var w [methodWords]uint64
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), MaxMethod), method[:n])
	for i := range (n + 7) / 8 {
		atomic.StoreUint64(p.word(OffMethod+8*i), w[i])
	}
	atomic.AddUint64(seq, 1) // even: done
}

// End publishes the end of the running call; failed says it was answered with err.
func (p *Page) End(failed bool) {
	seq := p.word(OffSeq)
	atomic.AddUint64(seq, 1)
	atomic.AddUint64(p.word(OffDone), 1)
	if failed {
		atomic.AddUint64(p.word(OffErrs), 1)
	}
	atomic.StoreUint64(p.word(OffCurID), 0)
	atomic.AddUint64(seq, 1)
}

// Snap is a consistent reading of a stats page.
type Snap struct {
	Calls, Done, Errs uint64
	CurID             uint64    // the call running now; 0: none
	CurStart          time.Time // when it started (zero if none)
	Lease             uint64    // its lease, 0: stdin
	Method            string    // its method
}

// Read takes a consistent snapshot (retrying while the worker writes). It reports false
// if the page is not set up (no magic) or the writer kept it busy for every try (a worker
// stopped in the middle of a write, say): then taskd knows nothing of its calls.
func (p *Page) Read() (Snap, bool) {
	if atomic.LoadUint64(p.word(OffMagic)) != Magic {
		return Snap{}, false
	}
	seq := p.word(OffSeq)
	for range 1000 {
		s1 := atomic.LoadUint64(seq)
		if s1&1 != 0 {
			continue
		}
		var s Snap
		s.Calls = atomic.LoadUint64(p.word(OffCalls))
		s.Done = atomic.LoadUint64(p.word(OffDone))
		s.Errs = atomic.LoadUint64(p.word(OffErrs))
		s.CurID = atomic.LoadUint64(p.word(OffCurID))
		start := atomic.LoadUint64(p.word(OffCurStart))
		s.Lease = atomic.LoadUint64(p.word(OffLease))
		n := int(uint32(atomic.LoadUint64(p.word(OffMethodN))))
		var w [methodWords]uint64
		if s.CurID != 0 {
			n = min(n, MaxMethod)
			for i := range (n + 7) / 8 {
				w[i] = atomic.LoadUint64(p.word(OffMethod + 8*i))
			}
		}
		if atomic.LoadUint64(seq) != s1 {
			continue
		}
		if s.CurID != 0 {
			s.CurStart = time.Unix(0, int64(start))
			s.Method = string(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), MaxMethod)[:n])
		} else {
			s.Lease = 0
		}
		return s, true
	}
	return Snap{}, false
}
