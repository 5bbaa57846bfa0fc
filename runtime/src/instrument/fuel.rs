//! In-module fuel metering: the cost table and where fuel is charged and checked.
//!
//! The module counts its own fuel in an exported mutable `i64` global ([`FUEL_GLOBAL`]), which
//! the host sets to the job's fuel limit before the guest runs and reads afterwards (fuel used
//! = limit − counter). Within a function the counter lives in a local (so Cranelift keeps it in
//! a register); the global is written back before every call and return and read again after
//! every call, so the host's WASI charges ([`crate::wasi::host`]) apply to the same counter.
//!
//! * **Charging.** Code is cut into straight-line segments: one starts at function entry, at
//!   the top of a `loop`, at the start of each arm of an `if`, after each `end` and after each
//!   `br_if`. At its start, a segment subtracts the cost of all its operators ([`cost`]): one
//!   subtraction per segment, no memory access.
//! * **Checking.** At function entry and at the top of every loop the counter is compared with
//!   zero; below it, the guest stops with a trap (`unreachable`, after writing the counter back).
//!   There is no call on this path, taken or not, so no register is spilled around it. Between
//!   two checks the code is loop-free and bounded by the function's size, so a guest can
//!   overrun its fuel by at most one function's worth of straight-line code, and a host call
//!   made with a negative counter is refused. A job whose counter is negative when it stops,
//!   however it stops, ran out of fuel (`out_of_fuel`), and its `fuel_consumed` is its limit.
//! * **Determinism.** Costs are a function of the module's operators only, so the same job
//!   stops at the same check with the same counter on every machine.
//!
//! # The cost table ([`COST_TABLE`], hashed into the engine configuration)
//!
//! Every operator costs 1, except `nop`, `drop`, `block`, `loop`, `else`, `end`, `unreachable`
//! and `return`, which cost 0 (wasmtime's default table, so fuel figures stay comparable).
//! The operators this pass inserts cost nothing. Host calls cost [`crate::wasi::HOST_CALL_FUEL`]
//! plus [`crate::wasi::FUEL_PER_BYTE`] per byte moved, charged by the host.

use wasmparser::Operator;

/// The export name of the fuel counter global.
pub const FUEL_GLOBAL: &str = "tidepool:fuel";

/// The cost table as hashed into the engine configuration; change it with [`cost`].
pub const COST_TABLE: &str = "1 per operator; 0 for nop drop block loop else end unreachable return";

/// The fuel an operator costs.
pub(crate) fn cost(op: &Operator<'_>) -> u64 {
    use Operator::*;
    match op {
        Nop | Drop | Block { .. } | Loop { .. } | Else | End | Unreachable | Return => 0,
        _ => 1,
    }
}

/// Whether a new segment starts right after `op`.
pub(crate) fn ends_segment(op: &Operator<'_>) -> bool {
    use Operator::*;
    matches!(op, Loop { .. } | If { .. } | Else | End | Br { .. } | BrIf { .. } | BrTable { .. } | Return | Unreachable)
}

/// For each operator index, the fuel charged just before it (non-zero only where a segment
/// starts).
pub(crate) fn segment_charges(ops: &[Operator<'_>]) -> Vec<u64> {
    let mut charges = vec![0; ops.len()];
    let mut start = 0;
    let mut sum = 0u64;
    for (i, op) in ops.iter().enumerate() {
        sum = sum.saturating_add(cost(op));
        if ends_segment(op) || i + 1 == ops.len() {
            charges[start] = sum;
            start = i + 1;
            sum = 0;
        }
    }
    charges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_charged_at_their_start() {
        use Operator::*;
        let ops = [
            I32Const { value: 1 },
            Loop { blockty: wasmparser::BlockType::Empty },
            Nop,
            I32Const { value: 0 },
            BrIf { relative_depth: 0 },
            Drop,
            End,
            End,
        ];
        // [const loop] [nop const br_if] [drop end] [end]
        assert_eq!(segment_charges(&ops), vec![1, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(cost(&Nop), 0);
        assert_eq!(cost(&I32Add), 1);
    }
}
