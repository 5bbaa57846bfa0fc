//! The interrupt check: how a running guest is stopped at its wall-clock limit, or on request,
//! without a call on its hot path.
//!
//! wasmtime's epoch interruption puts a check at every loop top and function entry whose slow
//! path is a call into the host; no float register survives a call, so Cranelift spills a
//! float loop's values around it on every iteration (mandelbrot ran 1.5× slower with epochs on
//! than off). Instead the pass gives the module a one-byte memory of its own, exported as
//! [`INTERRUPT_MEMORY`], and tests that byte beside the fuel check ([`super::fuel`]): where the
//! module compares its fuel counter with zero, it also loads the byte, and when either says
//! stop, it writes its counter back, marks the byte [`SEEN`] and traps (`unreachable`). The
//! load is atomic (the engine
//! allows atomics for this memory only): Cranelift may replace a plain load by an earlier one
//! of the same address when no store lies between them, so in a loop that never stores, a plain
//! load would be made once, before the loop, and the raised byte never seen. The
//! host's ticker thread sets the byte from outside when the job's deadline passes or it is
//! asked to stop (`crate::engine::watchdog`), and the job reads the trap as `timeout` or
//! `stopped` (a counter below zero still means `out_of_fuel` first).
//!
//! Guest code cannot reach this memory: the module was validated without multi-memory, so its
//! own instructions all name memory 0 (or the one it imports), and the added memory is the last.
//! A wall-clock stop is never deterministic, so the check changes nothing a receipt attests;
//! fuel counts are unchanged (the inserted operators cost nothing).

use wasm_encoder::{MemorySection, MemoryType};

/// The export name of the interrupt memory; its first byte is non-zero once the guest must stop.
pub const INTERRUPT_MEMORY: &str = "tidepool:interrupt";

/// The byte as the host raises it: the guest must stop.
pub const RAISED: u8 = 1;

/// The byte as the guest leaves it when its check saw it raised and stopped it. The host
/// reads a stop as its own only then: a guest that trapped by itself (its own `unreachable`,
/// a stack overflow) while the byte was being raised keeps its trap as its outcome.
pub const SEEN: u8 = 2;

/// `section` with the interrupt memory added: one byte (a page of one byte, the custom page
/// sizes proposal), which never grows. So small that resetting it between jobs is a store, not
/// a system call (see `engine::pooled`).
pub(crate) fn memory(mut section: MemorySection) -> MemorySection {
    section.memory(MemoryType {
        minimum: 1,
        maximum: Some(1),
        memory64: false,
        shared: false,
        page_size_log2: Some(0),
    });
    section
}
