//! The interrupt check: how a running guest is stopped at its wall-clock limit, or on request,
//! without a call on its hot path, and at the price of no more than the fuel check alone.
//!
//! wasmtime's epoch interruption puts a check at every loop top and function entry whose slow
//! path is a call into the host; no float register survives a call, so Cranelift spills a
//! float loop's values around it on every iteration (mandelbrot ran 1.5× slower with epochs on
//! than off). Instead the pass gives the module a small memory of its own, exported as
//! [`INTERRUPT_MEMORY`], whose first eight bytes hold the **floor**: an `i64`, zero while the
//! guest may run. The fuel check ([`super::fuel`]) compares the fuel counter with the floor
//! instead of with zero: one load, one comparison and one branch do both checks. The host's
//! ticker thread raises the floor to [`RAISED`], above every counter, when the job's deadline
//! passes or it is asked to stop (`crate::engine::watchdog`); the guest's next check then fails,
//! and its stop path writes its counter back, marks the byte at [`SEEN_AT`] and traps
//! (`unreachable`). The job reads the trap as `timeout` or `stopped` only when the byte says the
//! check saw the raised floor, and a counter below zero still means `out_of_fuel` first, so the
//! stop path marks the byte whatever failed: a fuel stop the host never raised stays one. With
//! fuel metering off the check compares zero with the floor.
//!
//! The load is atomic (the engine allows atomics for this memory only): Cranelift may replace a
//! plain load by an earlier one of the same address when no store lies between them, so in a
//! loop that never stores, a plain load would be made once, before the loop, and the raised
//! floor never seen.
//!
//! One check can miss a raised floor: one whose counter is exactly `i64::MAX` (a limit of at
//! least that, before any fuel is charged). Every loop iteration and call costs fuel, so the
//! next check sees it.
//!
//! Guest code cannot reach this memory: the module was validated without multi-memory, so its
//! own instructions all name memory 0 (or the one it imports), and the added memory is the last.
//! A wall-clock stop is never deterministic, so the check changes nothing a receipt attests;
//! fuel counts are unchanged (the inserted operators cost nothing).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use wasm_encoder::{MemArg, MemorySection, MemoryType};

/// The export name of the interrupt memory.
pub const INTERRUPT_MEMORY: &str = "tidepool:interrupt";

/// The interrupt memory's size in bytes: the floor (an `i64` at 0) and the seen byte.
pub const SIZE: u64 = 16;

/// The floor as the host raises it: above every fuel counter (see the module docs for the one
/// counter it is not above).
pub const RAISED: i64 = i64::MAX;

/// Where the guest's stop path marks [`SEEN`].
pub const SEEN_AT: u64 = 8;

/// The byte at [`SEEN_AT`] once the guest's check failed and stopped it. The host reads a stop
/// as its own only then: a guest that trapped by itself (its own `unreachable`, a stack
/// overflow) while the floor was being raised keeps its trap as its outcome.
pub const SEEN: u8 = 1;

/// `section` with the interrupt memory added: [`SIZE`] bytes (pages of one byte, the custom
/// page sizes proposal), which never grows. So small that resetting it between jobs is a store,
/// not a system call (see `engine::pooled`).
pub(crate) fn memory(mut section: MemorySection) -> MemorySection {
    section.memory(MemoryType {
        minimum: SIZE,
        maximum: Some(SIZE),
        memory64: false,
        shared: false,
        page_size_log2: Some(0),
    });
    section
}

/// The floor's `i64.atomic.load` in memory `memory_index` (address 0, offset 0).
pub(crate) fn floor(memory_index: u32) -> MemArg {
    MemArg { offset: 0, align: 3, memory_index }
}

/// The seen byte's `i32.atomic.store8` in memory `memory_index` (address 0, offset
/// [`SEEN_AT`]).
pub(crate) fn seen(memory_index: u32) -> MemArg {
    MemArg { offset: SEEN_AT, align: 0, memory_index }
}

/// Whether `base` can be an interrupt memory's first byte for [`raise`] and [`was_seen`]:
/// aligned for the floor's atomic `i64` (wasmtime maps memories page-aligned).
pub fn usable(base: NonNull<u8>, len: usize) -> bool {
    base.as_ptr().align_offset(align_of::<AtomicI64>()) == 0 && len >= SIZE as usize
}

/// Raises the floor of the interrupt memory at `base`: the guest stops at its next check.
///
/// # Safety
/// `base` must be the first byte of a live interrupt memory, [`usable`].
pub unsafe fn raise(base: NonNull<u8>) {
    // SAFETY: the caller's; the floor is only ever accessed atomically, from either side.
    unsafe { AtomicI64::from_ptr(base.as_ptr().cast()) }.store(RAISED, Ordering::Release);
}

/// Whether the guest's check saw the raised floor of the interrupt memory at `base`.
///
/// # Safety
/// As for [`raise`].
pub unsafe fn was_seen(base: NonNull<u8>) -> bool {
    // SAFETY: the caller's; within the memory (`SEEN_AT < SIZE`).
    unsafe { AtomicU8::from_ptr(base.as_ptr().add(SEEN_AT as usize)) }.load(Ordering::Acquire) == SEEN
}
