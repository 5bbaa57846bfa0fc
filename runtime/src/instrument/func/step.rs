//! One operator of the walk: control flow, calls, locals and the NaN effect of every other
//! operator on the abstract stack.

use wasmparser::Operator;

use super::{Frame, Kind, Op, Val, Walk};
use crate::instrument::nan::{self, Effect, Nan, Sign};
use crate::instrument::{Error, Weaken};

impl<'a> Walk<'_, 'a> {
    pub(super) fn step(&mut self, op: &Op<'a>) -> Result<(), Error> {
        use Operator::*;
        let dead = self.dead();
        match &op.op {
            Block { blockty } | Loop { blockty } | If { blockty } => {
                let (params, results) = self.ctx.block(*blockty)?;
                let kind = match op.op {
                    Block { .. } => Kind::Block,
                    Loop { .. } => Kind::Loop,
                    _ => Kind::If,
                };
                if kind == Kind::Loop && !dead && !self.weakened(Weaken::NanMerges) {
                    self.settle_all(params.len())?;
                }
                if kind == Kind::If {
                    self.pop();
                }
                let height = self.stack.len().saturating_sub(params.len());
                let entry = self.stack[height..].to_vec();
                self.emit_op(op)?;
                if kind == Kind::Loop {
                    // Back edges bring other values: inside, the parameters are only exact.
                    for v in &mut self.stack[height..] {
                        v.nan = Nan::Kept;
                    }
                }
                self.frames.push(Frame { kind, height, params, results, entry, dead, parent_dead: dead });
            }
            Else => {
                let results = self.frames.last().map_or(0, |f| f.results.len());
                if !self.weakened(Weaken::NanMerges) {
                    self.settle_all(results)?;
                }
                self.emit_op(op)?;
                if let Some(f) = self.frames.last_mut() {
                    f.kind = Kind::Else;
                    f.dead = f.parent_dead;
                    let (h, entry) = (f.height, f.entry.clone());
                    self.stack.truncate(h);
                    self.stack.extend(entry);
                }
            }
            End => {
                let (results, kind) = self.frames.last().map_or((0, Kind::Func), |f| (f.results.len(), f.kind));
                if !self.weakened(if kind == Kind::Func { Weaken::NanReturns } else { Weaken::NanMerges }) {
                    self.settle_all(results)?;
                }
                if kind == Kind::Func {
                    self.flush_fuel();
                }
                self.emit_op(op)?;
                if let Some(f) = self.frames.pop() {
                    self.stack.truncate(f.height);
                }
                self.push_results(op, Nan::Kept);
            }
            Br { relative_depth } => {
                if self.settle_branch(*relative_depth, 0)? {
                    self.flush_fuel();
                }
                self.emit_op(op)?;
                self.set_dead();
            }
            BrIf { relative_depth } => {
                if self.settle_branch(*relative_depth, 1)? {
                    self.flush_fuel();
                }
                self.emit_op(op)?;
                self.pop();
            }
            BrTable { targets } => {
                let mut to_function = self.settle_branch(targets.default(), 1)?;
                for t in targets.targets() {
                    let t = t?;
                    to_function |= self.frames.len().checked_sub(1 + t as usize) == Some(0);
                }
                if to_function {
                    self.flush_fuel();
                }
                self.emit_op(op)?;
                self.set_dead();
            }
            Return => {
                let n = self.frames.first().map_or(0, |f| f.results.len());
                if !self.weakened(Weaken::NanReturns) {
                    self.settle_all(n)?;
                }
                self.flush_fuel();
                self.emit_op(op)?;
                self.set_dead();
            }
            Unreachable => {
                self.emit_op(op)?;
                self.set_dead();
            }
            Call { function_index } | ReturnCall { function_index } => {
                let ty = *self
                    .ctx
                    .func_types
                    .get(*function_index as usize)
                    .ok_or_else(|| Error::Internal(format!("function {function_index} out of range")))?;
                self.call(ty, 0, matches!(op.op, ReturnCall { .. }), op)?;
            }
            CallIndirect { type_index, .. } | ReturnCallIndirect { type_index, .. } => {
                self.call(*type_index, 1, matches!(op.op, ReturnCallIndirect { .. }), op)?;
            }
            LocalGet { local_index } => {
                self.emit_op(op)?;
                let nan = self.locals.cur.get(*local_index as usize).copied().unwrap_or(Nan::Kept);
                self.push_results(op, nan);
            }
            LocalSet { local_index } | LocalTee { local_index } => {
                self.local_store(*local_index)?;
                self.emit_op(op)?;
                if matches!(op.op, LocalSet { .. }) {
                    self.pop();
                }
            }
            GlobalSet { .. } => {
                if !self.weakened(Weaken::NanEscapes) {
                    self.settle_all(1)?;
                }
                self.emit_op(op)?;
                self.pop();
            }
            Select | TypedSelect { .. } => {
                let n = self.stack.len();
                let (a, b) = if n >= 3 && !dead {
                    (self.stack[n - 3], self.stack[n - 2])
                } else {
                    (Val::kept(None), Val::kept(None))
                };
                let mut joined = a.nan.join(b.nan);
                if joined.is_none() && a.is_float() && !self.weakened(Weaken::NanMerges) {
                    self.settle(3, |i| i < 2)?;
                    let n = self.stack.len();
                    joined = self.stack[n - 3].nan.join(self.stack[n - 2].nan);
                }
                self.emit_op(op)?;
                self.pop_n(3);
                self.push_results(op, joined.unwrap_or(Nan::Kept));
            }
            F32Const { value } => {
                self.emit_op(op)?;
                self.push_results(op, Nan::of_const(u64::from(value.bits()), false));
            }
            F64Const { value } => {
                self.emit_op(op)?;
                self.push_results(op, Nan::of_const(value.bits(), true));
            }
            other => self.generic(other, op)?,
        }
        Ok(())
    }

    fn generic(&mut self, other: &Operator<'a>, op: &Op<'a>) -> Result<(), Error> {
        let pops = op.pops as usize;
        match nan::effect(other) {
            Effect::Arith => {
                self.emit_op(op)?;
                self.pop_n(pops);
                self.push_results(op, Nan::Pending(Sign::Positive));
            }
            Effect::Neg | Effect::Abs => {
                self.emit_op(op)?;
                let neg = matches!(nan::effect(other), Effect::Neg);
                if let Some(v) = self.top_mut() {
                    v.nan = if neg { v.nan.neg() } else { v.nan.abs() };
                }
            }
            Effect::Copysign => {
                if !self.weakened(Weaken::NanEscapes) {
                    self.settle_all(1)?;
                }
                self.emit_op(op)?;
                self.pop();
                if let Some(v) = self.top_mut() {
                    v.nan = v.nan.copysign();
                }
            }
            Effect::EscapeTop => {
                if !self.weakened(Weaken::NanEscapes) {
                    self.settle_all(1)?;
                }
                self.emit_op(op)?;
                self.pop_n(pops);
                self.push_results(op, Nan::Kept);
            }
            Effect::V128(lanes) => {
                self.emit_op(op)?;
                if self.ctx.options.nan && !self.dead() && !self.weakened(Weaken::V128) {
                    self.out.canonicalize_lanes(lanes);
                }
                self.pop_n(pops);
                self.push_results(op, Nan::Kept);
            }
            Effect::Safe => {
                self.emit_op(op)?;
                self.pop_n(pops);
                self.push_results(op, Nan::Safe);
            }
            Effect::Other => {
                self.emit_op(op)?;
                self.pop_n(pops);
                self.push_results(op, Nan::Kept);
            }
        }
        Ok(())
    }
}
