//! A counting global allocator for the allocation and memory tests (`benches/tests/`): `System`, with per-thread
//! counts that only a thread which has switched counting on keeps, so the test harness's other threads cannot
//! disturb a measurement. Counts, not time: deterministic on any machine, so these are tests, not benchmarks.
//!
//! A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: roger_benches::alloc_count::CountingAllocator = roger_benches::alloc_count::CountingAllocator;
//! ```
//!
//! and measures with [`counted`], or with [`set_counting`] and [`Counts::now`] differences.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, counting for the threads that switched counting on (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<isize> = const { Cell::new(0) };
    static BYTES: Cell<isize> = const { Cell::new(0) };
    static CHUNK_BYTES: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

/// glibc malloc's chunk for a request of `size` bytes (64-bit): size + 8-byte header, rounded up to 16, at least 32.
/// Closer to what the process's resident size pays than the requested size.
pub fn glibc_chunk(size: usize) -> isize {
    (size.saturating_add(8).div_ceil(16) * 16).max(32) as isize
}

fn note(allocations: isize, bytes: isize, chunk_bytes: isize, blocks: isize) {
    // `try_with`: a thread being torn down has no thread-locals left and is not measuring. The cells are
    // const-initialised and have no destructor, so touching them never allocates.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.with(|c| c.set(c.get() + allocations));
        BYTES.with(|c| c.set(c.get() + bytes));
        CHUNK_BYTES.with(|c| c.set(c.get() + chunk_bytes));
        BLOCKS.with(|c| c.set(c.get() + blocks));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as isize, glibc_chunk(layout.size()), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as isize, glibc_chunk(layout.size()), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as isize - layout.size() as isize, glibc_chunk(new_size) - glibc_chunk(layout.size()), 0);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as isize), -glibc_chunk(layout.size()), -1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Switches counting on or off for this thread.
pub fn set_counting(on: bool) {
    COUNTING.with(|c| c.set(on));
}

/// This thread's counts since it first counted (differences of two readings measure what lies between).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls of `alloc`, `alloc_zeroed` and `realloc` (signed like the others, so that either order of a
    /// subtraction is defined).
    pub allocations: isize,
    /// Net requested bytes (allocated − freed).
    pub bytes: isize,
    /// Net bytes rounded as glibc's malloc rounds chunks ([`glibc_chunk`]).
    pub chunk_bytes: isize,
    /// Net live blocks.
    pub blocks: isize,
}

impl Counts {
    /// This thread's counts now.
    pub fn now() -> Self {
        Counts {
            allocations: ALLOCATIONS.with(Cell::get),
            bytes: BYTES.with(Cell::get),
            chunk_bytes: CHUNK_BYTES.with(Cell::get),
            blocks: BLOCKS.with(Cell::get),
        }
    }

    /// Net bytes, glibc bytes and blocks per item, over `n` items.
    pub fn per(self, n: usize) -> (f64, f64, f64) {
        let n = n as f64;
        (self.bytes as f64 / n, self.chunk_bytes as f64 / n, self.blocks as f64 / n)
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;

    fn sub(self, o: Counts) -> Counts {
        Counts {
            allocations: self.allocations - o.allocations,
            bytes: self.bytes - o.bytes,
            chunk_bytes: self.chunk_bytes - o.chunk_bytes,
            blocks: self.blocks - o.blocks,
        }
    }
}

/// Runs `f` with counting on for this thread (restoring the previous setting after) and returns what it did.
pub fn counted<R>(f: impl FnOnce() -> R) -> (Counts, R) {
    let was = COUNTING.with(Cell::get);
    let before = Counts::now();
    set_counting(true);
    let r = f();
    set_counting(was);
    (Counts::now() - before, r)
}
