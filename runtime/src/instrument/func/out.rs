//! Writing the rewritten body: original operators' bytes, inserted instructions, the extra
//! locals they need, and the NaN materialization sequences.

use std::collections::HashMap;

use wasm_encoder::{Ieee32, Ieee64, Instruction};
use wasmparser::ValType;

use super::Body;
use crate::instrument::nan::{self, Lanes, Sign};

/// A piece of the rewritten body: an original operator's bytes, or an inserted instruction.
pub(crate) enum Piece<'a> {
    Raw(&'a [u8]),
    New(Instruction<'static>),
}

/// The instructions being written and the locals they need beyond the function's own.
pub(super) struct Out<'a> {
    pub(super) enabled: bool,
    pub(super) code: Vec<Piece<'a>>,
    pub(super) first_extra: u32,
    pub(super) extra: Vec<ValType>,
    pub(super) scratch: HashMap<(u8, usize), u32>,
}

pub(super) fn type_key(ty: ValType) -> u8 {
    match ty {
        ValType::I32 => 0,
        ValType::I64 => 1,
        ValType::F32 => 2,
        ValType::F64 => 3,
        ValType::V128 => 4,
        ValType::Ref(_) => 5,
    }
}

impl<'a> Out<'a> {
    pub(super) fn push(&mut self, i: Instruction<'static>) {
        if self.enabled {
            self.code.push(Piece::New(i));
        }
    }

    pub(super) fn local(&mut self, ty: ValType) -> u32 {
        self.extra.push(ty);
        self.first_extra + self.extra.len() as u32 - 1
    }

    /// The `slot`-th scratch local of type `ty` (`usize::MAX`: the materialization temporary).
    pub(super) fn scratch(&mut self, ty: ValType, slot: usize) -> u32 {
        if let Some(&l) = self.scratch.get(&(type_key(ty), slot)) {
            return l;
        }
        let l = self.local(ty);
        self.scratch.insert((type_key(ty), slot), l);
        l
    }

    /// Turns the pending float on top of the stack into what the eager engine would hold.
    pub(super) fn materialize(&mut self, ty: ValType, sign: Sign) {
        if !self.enabled {
            return;
        }
        let t = self.scratch(ty, usize::MAX);
        self.push(Instruction::LocalSet(t));
        let f64 = ty == ValType::F64;
        let neg = sign == Sign::Negative;
        self.push(if f64 {
            Instruction::F64Const(Ieee64::new(nan::canonical_f64(neg)))
        } else {
            Instruction::F32Const(Ieee32::new(nan::canonical_f32(neg)))
        });
        if sign == Sign::Own {
            self.push(Instruction::LocalGet(t));
            self.push(if f64 { Instruction::F64Copysign } else { Instruction::F32Copysign });
        }
        self.push(Instruction::LocalGet(t));
        self.push(Instruction::LocalGet(t));
        self.push(Instruction::LocalGet(t));
        self.push(if f64 { Instruction::F64Ne } else { Instruction::F32Ne });
        self.push(Instruction::Select);
    }

    /// Canonicalizes the NaN lanes of the v128 on top of the stack.
    pub(super) fn canonicalize_lanes(&mut self, lanes: Lanes) {
        if !self.enabled {
            return;
        }
        let t = self.scratch(ValType::V128, usize::MAX);
        self.push(Instruction::LocalSet(t));
        self.push(Instruction::V128Const(lanes.canonical()));
        self.push(Instruction::LocalGet(t));
        self.push(Instruction::LocalGet(t));
        self.push(Instruction::LocalGet(t));
        self.push(match lanes {
            Lanes::F32x4 => Instruction::F32x4Ne,
            Lanes::F64x2 => Instruction::F64x2Ne,
        });
        self.push(Instruction::V128Bitselect);
    }
}

impl<'a> Out<'a> {
    pub(super) fn new(enabled: bool, body: &Body<'_>) -> Self {
        Self {
            enabled,
            code: Vec::new(),
            first_extra: body.locals.len() as u32,
            extra: Vec::new(),
            scratch: HashMap::new(),
        }
    }
}
