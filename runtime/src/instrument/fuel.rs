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
//! * **Loops.** A loop's first segment is not charged at the loop's top but on every edge
//!   into it ([`plan`]): before the `loop` on entry, and on each branch back to it, where the
//!   charge is added to the charge at the start of the branch's own segment (on entry too, when
//!   that segment qualifies). A conditional
//!   branch gives it back when it is not taken, in the charge of the segment after it. So a
//!   loop whose back edge is a `br_if` makes one subtraction per iteration instead of two.
//!   The counter then differs from the plain placement only between a segment's start and its
//!   branch, where nothing reads it: the module writes it to the global only at calls, returns
//!   and stops, and compares it only at checks; a loop is placed so only when every branch to
//!   it qualifies (no call between its segment's start and the branch, that start not itself
//!   a check, no `br_table` to the loop). Counts, and where a job runs out, are unchanged.
//! * **Checking.** At function entry and at the top of every loop the counter is compared with
//!   zero (with the interrupt check, with the floor the host raises to stop the guest, zero until
//!   then: [`super::interrupt`]); below it, the guest stops with a trap (`unreachable`, after
//!   writing the counter back).
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

/// Whether the counter is checked before the operator that follows `previous` (`None`: the
/// function's first): at function entry and at the top of every loop.
pub(crate) fn checks_after(previous: Option<&Operator<'_>>) -> bool {
    previous.is_none_or(|op| matches!(op, Operator::Loop { .. }))
}

/// A segment's charge as the signed amount the plan adds and takes back (bounded so that a
/// few of them summed cannot overflow; no function has segments anywhere near as costly).
fn signed(charge: u64) -> i64 {
    charge.min(i64::MAX as u64 / 4) as i64
}

/// Whether the walker hands the counter over at `op` (writes it to the global before it).
fn hands_over(op: &Operator<'_>) -> bool {
    use Operator::*;
    matches!(
        op,
        Call { .. }
            | CallIndirect { .. }
            | ReturnCall { .. }
            | ReturnCallIndirect { .. }
            | CallRef { .. }
            | ReturnCallRef { .. }
    )
}

/// The fuel subtracted just before each operator (negative: added back): the segment charges
/// of [`segment_charges`], with loops charged on their edges (see the module docs) when
/// `merge_loops`. `refund` is false only to show that the tests notice a missing refund.
pub(crate) fn plan(ops: &[Operator<'_>], merge_loops: bool, refund: bool) -> Vec<i64> {
    let charges = segment_charges(ops);
    let mut plan: Vec<i64> = charges.iter().map(|&c| signed(c)).collect();
    if !merge_loops {
        return plan;
    }
    let check_point = |i: usize| checks_after(i.checked_sub(1).map(|k| &ops[k]));
    // Each operator's segment start, and whether the counter is handed over between the two.
    let mut segment = vec![(0usize, false); ops.len()];
    let (mut start, mut handed) = (0, false);
    for (i, op) in ops.iter().enumerate() {
        segment[i] = (start, handed);
        handed |= hands_over(op);
        if ends_segment(op) {
            (start, handed) = (i + 1, false);
        }
    }
    // The branches to each loop (index, conditional), by the loop's index; `None` once a
    // `br_table` reaches it.
    let mut loops: std::collections::BTreeMap<usize, Option<Vec<(usize, bool)>>> = Default::default();
    let mut frames: Vec<Option<usize>> = vec![None];
    let target =
        |frames: &[Option<usize>], depth: u32| frames.len().checked_sub(1 + depth as usize).and_then(|k| frames[k]);
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::If { .. } => frames.push(None),
            Operator::Loop { .. } => {
                frames.push(Some(i));
                loops.insert(i, Some(Vec::new()));
            }
            Operator::End => {
                frames.pop();
            }
            Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => {
                if let Some(p) = target(&frames, *relative_depth)
                    && let Some(Some(edges)) = loops.get_mut(&p)
                {
                    edges.push((i, matches!(op, Operator::BrIf { .. })));
                }
            }
            Operator::BrTable { targets } => {
                let depths = targets.targets().filter_map(Result::ok).chain(std::iter::once(targets.default()));
                for depth in depths.collect::<Vec<_>>() {
                    if let Some(p) = target(&frames, depth) {
                        loops.insert(p, None);
                    }
                }
            }
            _ => {}
        }
    }
    for (p, edges) in loops {
        let Some(edges) = edges else { continue };
        let first = charges.get(p + 1).map_or(0, |&c| signed(c));
        let qualifies = |&(b, _): &(usize, bool)| {
            let (start, handed) = segment[b];
            !check_point(start) && !handed && b + 1 < ops.len()
        };
        if first == 0 || check_point(p) || !edges.iter().all(qualifies) {
            continue;
        }
        plan[p + 1] -= first;
        // On entry, with the charge at the start of the `loop`'s own segment when that start
        // qualifies as a branch's would, else just before the `loop`.
        let (start, handed) = segment[p];
        plan[if check_point(start) || handed { p } else { start }] += first;
        for (b, conditional) in edges {
            plan[segment[b].0] += first;
            if conditional && refund {
                plan[b + 1] -= first;
            }
        }
    }
    plan
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

    #[test]
    fn a_loop_is_charged_on_its_edges_once_per_iteration() {
        use Operator::*;
        let (b, l) = (wasmparser::BlockType::Empty, wasmparser::BlockType::Empty);
        let ops = [
            Block { blockty: b },
            Loop { blockty: l },
            I32Const { value: 1 },
            BrIf { relative_depth: 1 },
            Nop,
            I32Const { value: 0 },
            BrIf { relative_depth: 0 },
            End,
            End,
        ];
        // [block loop] [const br_if] [nop const br_if] [end] [end]
        assert_eq!(plan(&ops, false, true), vec![0, 0, 2, 0, 2, 0, 0, 0, 0]);
        // Entry pays the loop's first segment (before the `loop`: its segment starts at the
        // function's check); the branch back pays it with its own segment; not taking the
        // branch gives it back.
        assert_eq!(plan(&ops, true, true), vec![0, 2, 0, 0, 4, 0, 0, -2, 0]);
        // A call between the branch's segment start and the branch reads the counter: the
        // loop stays charged at its top.
        let mut with_call = ops.clone();
        with_call[4] = Call { function_index: 0 };
        assert_eq!(plan(&with_call, true, true), vec![0, 0, 2, 0, 3, 0, 0, 0, 0]);
    }
}
