//! The wasm-level stack limit: each function's frame cost, counted in the module itself.
//!
//! A function's cost in *stack units* is [`FRAME_UNITS`] plus one unit per parameter and local,
//! 8 for the locals the pass adds, and two per slot of its maximum operand stack height (the
//! values themselves and the pass's spill locals), as computed from the wasm by the validator (the measure Substrate's and NEAR's stack-height
//! instrumentation use). An exported mutable `i64` global ([`STACK_GLOBAL`]) holds the units
//! left; the host sets it to the job's `max_stack_height`. On entry a function subtracts its
//! cost and, below zero, traps; after every call the caller writes its own level back, and a
//! tail call gives its frame back before jumping. A job whose counter is negative when it
//! traps hit the stack limit: outcome `trap` with [`STACK_TRAP_MESSAGE`], identical on every
//! architecture, because the depth depends on the wasm only.
//!
//! # Native stack: why the wasm-level limit is always reached first
//!
//! wasmtime's own native limit (`max_wasm_stack`) stays as a backstop, set to
//! [`native_stack_bytes`]`(max_stack_height)` = [`BYTES_PER_UNIT`] bytes per unit plus
//! [`NATIVE_SLACK`]. A Cranelift frame holds the return address and frame pointer, the
//! callee-saved registers it uses, its spill slots and the outgoing arguments of its calls:
//!
//! * x86-64: 16 bytes of return address and frame pointer, at most 5 × 8 bytes of callee-saved
//!   integer registers (System V has no callee-saved vector registers): at most 56 bytes;
//! * aarch64: 16 bytes of frame record, at most 10 × 8 bytes of callee-saved integer registers
//!   (x19–x28) and 8 × 8 bytes of callee-saved vector halves (d8–d15): at most 160 bytes;
//!
//! covered by the frame's fixed [`FRAME_UNITS`] plus the 8 units the pass's own locals count
//! (16 × 16 = 256 bytes). The rest is spill slots and outgoing arguments: 8 bytes per scalar
//! and 16 per v128 value live at once. A function's live values are its locals and its operand
//! stack, each counted as a unit, with the operand stack counted twice (the pass's spill
//! locals); Cranelift's temporaries and the values its optimizer keeps alive longer take the
//! rest. Host functions and trampolines run above the last wasm frame, covered by
//! [`NATIVE_SLACK`]; the job's thread has 1 MiB more (see `crate::thread`).
//!
//! **Measured** (`runtime/tests/sandbox/stack.rs`, x86-64): frames built to be as large as
//! possible per unit (many live f64 and v128 locals, a deep operand stack of f64 and v128 held
//! across the call, sixteen arguments of which four v128) stop at the wasm-level limit with a
//! native backstop of 8 bytes per unit, and reach the native backstop first at 4 bytes per unit.
//! The configured 16 bytes per unit is twice the worst seen; the test keeps checking that a
//! backstop half as large (8 bytes per unit) is never reached.

/// The export name of the stack units global.
pub const STACK_GLOBAL: &str = "tidepool:stack";

/// The trap message of a job that reached its wasm-level stack limit.
pub const STACK_TRAP_MESSAGE: &str = "call stack exhausted: the wasm stack height limit was reached";

/// Fixed units per frame (return address, frame pointer, callee-saved registers).
pub const FRAME_UNITS: u64 = 8;

/// Native bytes allowed per stack unit (see the module docs for why this is enough).
pub const BYTES_PER_UNIT: u64 = 16;

/// Native bytes beyond the frames (host calls, trampolines, signal handling).
pub const NATIVE_SLACK: u64 = 256 * 1024;

/// Locals the pass itself may add to a function beyond its spill slots (fuel, level, and one
/// temporary per value type).
const PASS_LOCALS: u64 = 8;

/// The cost of a frame with `locals` parameters and locals and an operand stack up to
/// `max_operands` values high. The operand stack counts twice: the pass may spill up to that
/// many values to locals of its own around a materialization.
pub(crate) fn frame_units(locals: u64, max_operands: u64) -> u64 {
    FRAME_UNITS.saturating_add(locals).saturating_add(PASS_LOCALS).saturating_add(max_operands.saturating_mul(2))
}

/// wasmtime's native `max_wasm_stack` for a wasm-level limit: always more than the frames
/// that limit admits can use.
pub fn native_stack_bytes(max_stack_height: u64) -> u64 {
    max_stack_height.saturating_mul(BYTES_PER_UNIT).saturating_add(NATIVE_SLACK)
}
