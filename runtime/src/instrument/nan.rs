//! Lazy NaN canonicalization: what a float value's bits are worth, and which operators produce,
//! keep or observe NaN bits.
//!
//! # The promise
//!
//! The rewritten module, run by an engine that does **not** canonicalize NaNs, computes bit for
//! bit what the original module computes on an engine that canonicalizes after every float
//! arithmetic operator (Cranelift's `nan_canonicalization`, the legacy engine: `add`, `sub`,
//! `mul`, `div`, `min`, `max`, `sqrt`, `ceil`, `floor`, `trunc`, `nearest`, `promote`, `demote`
//! give the positive quiet NaN `0x7fc00000` / `0x7ff8000000000000` whenever they give a NaN).
//!
//! # The argument
//!
//! Each scalar float value on the operand stack or in a local has an abstract [`Nan`] state
//! relating its bits on the fast engine (`raw`) to its bits on the eager engine (`eager`):
//!
//! * [`Nan::Safe`]: never a NaN (non-NaN constants, conversions from integers, zero-initialized
//!   locals), so `raw == eager`;
//! * [`Nan::Canon`]`(neg)`: `raw == eager`, and it is either not a NaN or the canonical NaN with
//!   that sign (what a materialization leaves, or a canonical NaN constant);
//! * [`Nan::Kept`]: `raw == eager`, any bits (loads, parameters, globals, call results,
//!   reinterpretations, NaN constants): the spec says these bits must be kept, NaN-boxing
//!   included, so they are never touched;
//! * [`Nan::Pending`]`(sign)`: derived from arithmetic. `raw` and `eager` are both NaN or both
//!   the same non-NaN (IEEE arithmetic is NaN exactly when an operand is NaN or the operation is
//!   invalid, and deterministic otherwise), but a NaN's bits may differ: `eager` is the
//!   canonical NaN whose sign is given by [`Sign`]: positive, negative (after an odd number of
//!   `neg`), or `raw`'s own sign (after `copysign` from a value whose sign is exact).
//!
//! Arithmetic gives `Pending(Positive)` whatever its operands (the eager engine canonicalizes its
//! result). `neg` flips a pending sign, `abs` makes it positive, `copysign` keeps `raw`'s sign
//! (its sign operand is made exact first). Comparisons and conversions to integers give the
//! same result for `raw` and `eager` (they only see NaN-ness and non-NaN values), so they need
//! nothing. Everywhere else a pending value's bits could be seen or mixed with kept bits, it is
//! **materialized** first (`x != x ? canonical NaN of its sign : x`), which turns `raw` into
//! `eager`:
//!
//! * escapes: stores, `reinterpret`, `global.set`, call arguments, returns, the sign operand of
//!   `copysign`, `splat` and `replace_lane` into a v128;
//! * merges: values carried by a branch or a block's end to its label, `select` operands whose
//!   states do not [`join`](Nan::join), and locals (each local gets one state for the whole
//!   function, the join of everything stored in it, found by iterating to a fixed point; a local
//!   whose stores do not join takes only materialized values).
//!
//! v128 values are always exact: every float-lane operator that can produce a NaN (arithmetic,
//! `relaxed_madd`/`nmadd`, `relaxed_min`/`max`, lane-width changes) is followed by a lane-wise
//! canonicalization, because integer operators, shuffles and lane views all see the bits. This
//! also fixes `relaxed_madd` on x86-64 CPUs without FMA, which Cranelift lowers to a call its
//! own canonicalization does not see.

use wasmparser::Operator;

/// The sign of the canonical NaN a pending value stands for when it is a NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sign {
    Positive,
    Negative,
    /// The sign `raw` has (exact, because it came from an exact `copysign` operand).
    Own,
}

/// What a scalar float's bits are worth; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nan {
    Safe,
    Canon(bool),
    Kept,
    Pending(Sign),
}

impl Nan {
    /// The least state covering both, or `None` when no state does (the pending side must be
    /// materialized).
    pub(crate) fn join(self, other: Nan) -> Option<Nan> {
        use Nan::*;
        Some(match (self, other) {
            (a, b) if a == b => a,
            (Safe, x) | (x, Safe) => x,
            (Canon(_), Canon(_)) | (Canon(_), Kept) | (Kept, Canon(_)) => Kept,
            (Canon(neg), Pending(s)) | (Pending(s), Canon(neg)) => match s {
                Sign::Own => Pending(Sign::Own),
                Sign::Negative if neg => Pending(s),
                Sign::Positive if !neg => Pending(s),
                _ => return None,
            },
            _ => return None,
        })
    }

    pub(crate) fn is_pending(self) -> bool {
        matches!(self, Nan::Pending(_))
    }

    /// The state after materialization.
    pub(crate) fn materialized(self) -> Nan {
        match self {
            Nan::Pending(Sign::Positive) => Nan::Canon(false),
            Nan::Pending(Sign::Negative) => Nan::Canon(true),
            Nan::Pending(Sign::Own) => Nan::Kept,
            other => other,
        }
    }

    /// `neg`: flips the sign of a pending or canonical value.
    pub(crate) fn neg(self) -> Nan {
        match self {
            Nan::Pending(Sign::Positive) => Nan::Pending(Sign::Negative),
            Nan::Pending(Sign::Negative) => Nan::Pending(Sign::Positive),
            Nan::Canon(n) => Nan::Canon(!n),
            other => other,
        }
    }

    /// `abs`: clears the sign.
    pub(crate) fn abs(self) -> Nan {
        match self {
            Nan::Pending(_) => Nan::Pending(Sign::Positive),
            Nan::Canon(_) => Nan::Canon(false),
            other => other,
        }
    }

    /// `copysign(self, y)` once `y` is exact.
    pub(crate) fn copysign(self) -> Nan {
        match self {
            Nan::Pending(_) => Nan::Pending(Sign::Own),
            Nan::Safe => Nan::Safe,
            Nan::Canon(_) | Nan::Kept => Nan::Kept,
        }
    }

    /// The state of a constant with these bits (`f32` bits widened, or `f64` bits).
    pub(crate) fn of_const(bits: u64, f64: bool) -> Nan {
        let (exp, frac, sign, canon) = if f64 {
            (bits >> 52 & 0x7ff == 0x7ff, bits & ((1 << 52) - 1), bits >> 63 == 1, 1u64 << 51)
        } else {
            (bits >> 23 & 0xff == 0xff, bits & ((1 << 23) - 1), bits >> 31 & 1 == 1, 1u64 << 22)
        };
        match (exp, frac) {
            (true, 0) | (false, _) => Nan::Safe,
            (true, f) if f == canon => Nan::Canon(sign),
            _ => Nan::Kept,
        }
    }
}

/// How an operator treats NaN bits, for the operators that matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Scalar float arithmetic: the result is `Pending(Positive)`.
    Arith,
    Neg,
    Abs,
    /// `copysign`: the sign operand (top of stack) escapes.
    Copysign,
    /// The top operand's bits escape (stores, reinterpret, `splat`, `replace_lane`).
    EscapeTop,
    /// A v128 float-lane result to canonicalize, with its lane shape.
    V128(Lanes),
    /// Never a NaN.
    Safe,
    /// Anything else: inputs are consumed without escaping, float results are [`Nan::Kept`].
    Other,
}

/// The lane shape of a v128 float result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lanes {
    F32x4,
    F64x2,
}

impl Lanes {
    /// The canonical NaN in every lane.
    pub(crate) fn canonical(self) -> i128 {
        match self {
            Lanes::F32x4 => {
                let lane = u128::from(canonical_f32(false));
                (lane | lane << 32 | lane << 64 | lane << 96) as i128
            }
            Lanes::F64x2 => {
                let lane = u128::from(canonical_f64(false));
                (lane | lane << 64) as i128
            }
        }
    }
}

/// The canonical NaN's bits, with a sign.
pub(crate) fn canonical_f32(neg: bool) -> u32 {
    0x7fc0_0000 | (u32::from(neg) << 31)
}

/// The canonical NaN's bits, with a sign.
pub(crate) fn canonical_f64(neg: bool) -> u64 {
    0x7ff8_0000_0000_0000 | (u64::from(neg) << 63)
}

/// Classifies an operator (the structural ones, locals, globals, calls, branches and `select`
/// are handled by the rewriter itself).
pub(crate) fn effect(op: &Operator<'_>) -> Effect {
    use Operator::*;
    match op {
        F32Add | F32Sub | F32Mul | F32Div | F32Min | F32Max | F32Sqrt | F32Ceil | F32Floor | F32Trunc | F32Nearest
        | F64Add | F64Sub | F64Mul | F64Div | F64Min | F64Max | F64Sqrt | F64Ceil | F64Floor | F64Trunc
        | F64Nearest | F32DemoteF64 | F64PromoteF32 => Effect::Arith,
        F32Neg | F64Neg => Effect::Neg,
        F32Abs | F64Abs => Effect::Abs,
        F32Copysign | F64Copysign => Effect::Copysign,
        F32Store { .. }
        | F64Store { .. }
        | I32ReinterpretF32
        | I64ReinterpretF64
        | F32x4Splat
        | F64x2Splat
        | F32x4ReplaceLane { .. }
        | F64x2ReplaceLane { .. } => Effect::EscapeTop,
        F32ConvertI32S | F32ConvertI32U | F32ConvertI64S | F32ConvertI64U | F64ConvertI32S | F64ConvertI32U
        | F64ConvertI64S | F64ConvertI64U => Effect::Safe,
        F32x4Add | F32x4Sub | F32x4Mul | F32x4Div | F32x4Min | F32x4Max | F32x4Sqrt | F32x4Ceil | F32x4Floor
        | F32x4Trunc | F32x4Nearest | F32x4DemoteF64x2Zero | F32x4RelaxedMadd | F32x4RelaxedNmadd | F32x4RelaxedMin
        | F32x4RelaxedMax => Effect::V128(Lanes::F32x4),
        F64x2Add | F64x2Sub | F64x2Mul | F64x2Div | F64x2Min | F64x2Max | F64x2Sqrt | F64x2Ceil | F64x2Floor
        | F64x2Trunc | F64x2Nearest | F64x2PromoteLowF32x4 | F64x2RelaxedMadd | F64x2RelaxedNmadd | F64x2RelaxedMin
        | F64x2RelaxedMax => Effect::V128(Lanes::F64x2),
        _ => Effect::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_keep_what_both_sides_promise() {
        use Nan::*;
        assert_eq!(Safe.join(Pending(Sign::Positive)), Some(Pending(Sign::Positive)));
        assert_eq!(Canon(false).join(Pending(Sign::Positive)), Some(Pending(Sign::Positive)));
        assert_eq!(Canon(true).join(Pending(Sign::Positive)), None, "a -NaN is not what +pending stands for");
        assert_eq!(Canon(true).join(Pending(Sign::Own)), Some(Pending(Sign::Own)));
        assert_eq!(Kept.join(Pending(Sign::Own)), None, "kept bits may be any NaN");
        assert_eq!(Pending(Sign::Positive).join(Pending(Sign::Negative)), None);
        assert_eq!(Canon(true).join(Canon(false)), Some(Kept));
    }

    #[test]
    fn constants_are_classified_by_their_bits() {
        assert_eq!(Nan::of_const(0x7fc0_0000, false), Nan::Canon(false));
        assert_eq!(Nan::of_const(0xffc0_0000, false), Nan::Canon(true));
        assert_eq!(Nan::of_const(0x7fa0_0001, false), Nan::Kept);
        assert_eq!(Nan::of_const(0x7f80_0000, false), Nan::Safe, "infinity");
        assert_eq!(Nan::of_const(0x7ff8_0000_0000_0000, true), Nan::Canon(false));
        assert_eq!(Nan::of_const(0x7ff0_0000_0000_0001, true), Nan::Kept);
        assert_eq!(Nan::of_const(1.5f64.to_bits(), true), Nan::Safe);
    }

    #[test]
    fn canonical_lanes() {
        assert_eq!(Lanes::F32x4.canonical() as u128, 0x7fc00000_7fc00000_7fc00000_7fc00000);
        assert_eq!(Lanes::F64x2.canonical() as u128, 0x7ff8000000000000_7ff8000000000000);
    }
}
