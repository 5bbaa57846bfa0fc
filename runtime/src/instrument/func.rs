//! Rewriting one function body: a single walk over its operators inserts the stack-height
//! prologue, the fuel charges and checks, and the NaN materializations, after a fixed point of
//! the same walk has found what each local may hold.
//!
//! The walk keeps an abstract operand stack (each value's type and [`Nan`] state) and the
//! control frames, the way the validator does. Unreachable code is copied as it is.

use std::collections::HashMap;

use wasm_encoder::{BlockType as EBlock, Ieee32, Ieee64, Instruction};
use wasmparser::{BlockType, FuncValidator, FunctionBody, Operator, ValType, ValidatorResources};

use super::nan::{self, Effect, Lanes, Nan, Sign};
use super::{Error, Options, Weaken, fuel, stack};

/// A function type.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sig {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// What the walk needs to know about the module.
pub(crate) struct ModuleCtx<'m> {
    /// Function types by type index (`None` for other kinds of types).
    pub types: &'m [Option<Sig>],
    /// The type index of every function, imported ones first.
    pub func_types: &'m [u32],
    pub fuel_global: u32,
    pub stack_global: u32,
    pub options: &'m Options,
}

impl ModuleCtx<'_> {
    fn sig(&self, type_index: u32) -> Result<&Sig, Error> {
        self.types
            .get(type_index as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Unsupported(format!("type {type_index} is not a function type")))
    }

    fn block(&self, ty: BlockType) -> Result<(Vec<ValType>, Vec<ValType>), Error> {
        Ok(match ty {
            BlockType::Empty => (Vec::new(), Vec::new()),
            BlockType::Type(t) => (Vec::new(), vec![t]),
            BlockType::FuncType(i) => {
                let sig = self.sig(i)?;
                (sig.params.clone(), sig.results.clone())
            }
        })
    }
}

/// One operator with what the validator knew about it.
struct Op<'a> {
    op: Operator<'a>,
    /// Its bytes, copied as they are (no index changes).
    raw: &'a [u8],
    pops: u32,
    /// The types of the values it leaves on the stack, deepest first (`None`: unknown, only in
    /// unreachable code).
    pushed: Vec<Option<ValType>>,
}

/// A validated function body, operator by operator.
pub(crate) struct Body<'a> {
    ops: Vec<Op<'a>>,
    /// Parameters then declared locals.
    locals: Vec<ValType>,
    params: usize,
    declared: Vec<(u32, ValType)>,
    max_operands: u64,
    type_index: u32,
    /// The fuel charged before each operator.
    charges: Vec<u64>,
}

/// Validates `body` and records its operators.
pub(crate) fn read<'a>(
    mut validator: FuncValidator<ValidatorResources>,
    module: &'a [u8],
    body: &FunctionBody<'a>,
    ctx: &ModuleCtx<'_>,
    func_index: u32,
) -> Result<Body<'a>, Error> {
    let type_index = *ctx
        .func_types
        .get(func_index as usize)
        .ok_or_else(|| Error::Unsupported(format!("function {func_index} has no type")))?;
    let sig = ctx.sig(type_index)?;
    let mut locals = sig.params.clone();
    let params = locals.len();
    let mut declared = Vec::new();
    let mut reader = body.get_locals_reader()?;
    for _ in 0..reader.get_count() {
        let offset = reader.original_position();
        let (count, ty) = reader.read()?;
        validator.define_locals(offset, count, ty)?;
        if locals.len() + count as usize > 50_000 {
            return Err(Error::Unsupported("a function declares more than 50 000 locals".into()));
        }
        locals.extend(std::iter::repeat_n(ty, count as usize));
        declared.push((count, ty));
    }
    let mut ops = Vec::new();
    let mut max_operands = 0u64;
    let mut reader = body.get_operators_reader()?;
    while !reader.eof() {
        let offset = reader.original_position();
        let op = reader.read()?;
        let arity = op.operator_arity(&validator);
        validator.op(offset, &op)?;
        let Some((pops, pushes)) = arity else {
            return Err(Error::Unsupported(format!("the operator {op:?}")));
        };
        let pushed = (0..pushes as usize).rev().map(|d| validator.get_operand_type(d).flatten()).collect();
        max_operands = max_operands.max(u64::from(validator.operand_stack_height()));
        let raw = module
            .get(offset..reader.original_position())
            .ok_or_else(|| Error::Internal("an operator outside the module".into()))?;
        ops.push(Op { op, raw, pushed, pops });
    }
    reader.finish()?;
    let charges = fuel::segment_charges(&ops.iter().map(|o| o.op.clone()).collect::<Vec<_>>());
    Ok(Body { ops, locals, params, declared, max_operands, type_index, charges })
}

/// A value on the abstract operand stack.
#[derive(Clone, Copy, Debug)]
struct Val {
    ty: Option<ValType>,
    nan: Nan,
}

impl Val {
    fn kept(ty: Option<ValType>) -> Self {
        Self { ty, nan: Nan::Kept }
    }

    fn is_float(&self) -> bool {
        matches!(self.ty, Some(ValType::F32 | ValType::F64))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Func,
    Block,
    Loop,
    If,
    Else,
}

struct Frame {
    kind: Kind,
    /// Stack height below the frame's parameters.
    height: usize,
    params: Vec<ValType>,
    results: Vec<ValType>,
    /// The parameters as they entered an `if`, for its `else`.
    entry: Vec<Val>,
    dead: bool,
    parent_dead: bool,
}

impl Frame {
    fn label_arity(&self) -> usize {
        if self.kind == Kind::Loop { self.params.len() } else { self.results.len() }
    }
}

/// What each local may hold, for the whole function.
struct Locals {
    /// The states `local.get` reads (the previous iteration's result).
    cur: Vec<Nan>,
    /// The join of what this iteration stored.
    next: Vec<Nan>,
    /// Locals that take only materialized values.
    exact_only: Vec<bool>,
    /// Set when a store did not join: the iteration must be redone.
    conflict: bool,
}

impl Locals {
    fn initial(body: &Body<'_>) -> Vec<Nan> {
        (0..body.locals.len()).map(|i| if i < body.params { Nan::Kept } else { Nan::Safe }).collect()
    }
}

/// A piece of the rewritten body: an original operator's bytes, or an inserted instruction.
pub(crate) enum Piece<'a> {
    Raw(&'a [u8]),
    New(Instruction<'static>),
}

/// The instructions being written and the locals they need beyond the function's own.
struct Out<'a> {
    enabled: bool,
    code: Vec<Piece<'a>>,
    first_extra: u32,
    extra: Vec<ValType>,
    scratch: HashMap<(u8, usize), u32>,
}

fn type_key(ty: ValType) -> u8 {
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
    fn push(&mut self, i: Instruction<'static>) {
        if self.enabled {
            self.code.push(Piece::New(i));
        }
    }

    fn local(&mut self, ty: ValType) -> u32 {
        self.extra.push(ty);
        self.first_extra + self.extra.len() as u32 - 1
    }

    /// The `slot`-th scratch local of type `ty` (`usize::MAX`: the materialization temporary).
    fn scratch(&mut self, ty: ValType, slot: usize) -> u32 {
        if let Some(&l) = self.scratch.get(&(type_key(ty), slot)) {
            return l;
        }
        let l = self.local(ty);
        self.scratch.insert((type_key(ty), slot), l);
        l
    }

    /// Turns the pending float on top of the stack into what the eager engine would hold.
    fn materialize(&mut self, ty: ValType, sign: Sign) {
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
    fn canonicalize_lanes(&mut self, lanes: Lanes) {
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

/// The rewritten body: its extra locals and its code.
pub(crate) struct Rewritten<'a> {
    pub declared: Vec<(u32, ValType)>,
    pub extra: Vec<ValType>,
    pub code: Vec<Piece<'a>>,
}

/// Rewrites one function.
pub(crate) fn rewrite<'a>(body: &Body<'a>, ctx: &ModuleCtx<'_>) -> Result<Rewritten<'a>, Error> {
    let initial = Locals::initial(body);
    let mut locals =
        Locals { cur: initial.clone(), next: initial.clone(), exact_only: vec![false; initial.len()], conflict: false };
    if ctx.options.nan {
        // Iterate until what the locals may hold is stable (a finite lattice, joined upwards).
        let mut rounds = 0;
        loop {
            locals.next = initial.clone();
            locals.conflict = false;
            let mut out = Out::new(false, body);
            Walk::new(body, ctx, &mut locals, &mut out).run()?;
            let mut changed = locals.conflict;
            for i in 0..locals.cur.len() {
                let joined = locals.cur[i].join(locals.next[i]).unwrap_or(Nan::Kept);
                changed |= joined != locals.cur[i];
                locals.cur[i] = joined;
            }
            rounds += 1;
            if !changed {
                break;
            }
            if rounds > 64 {
                // Cannot happen for a finite lattice joined upwards; be safe regardless.
                locals.exact_only.iter_mut().for_each(|e| *e = true);
                locals.cur.iter_mut().for_each(|s| *s = Nan::Kept);
                break;
            }
        }
    }
    let mut out = Out::new(true, body);
    Walk::new(body, ctx, &mut locals, &mut out).run()?;
    Ok(Rewritten { declared: body.declared.clone(), extra: out.extra, code: out.code })
}

impl<'a> Out<'a> {
    fn new(enabled: bool, body: &Body<'_>) -> Self {
        Self {
            enabled,
            code: Vec::new(),
            first_extra: body.locals.len() as u32,
            extra: Vec::new(),
            scratch: HashMap::new(),
        }
    }
}

struct Walk<'w, 'a> {
    body: &'w Body<'a>,
    ctx: &'w ModuleCtx<'w>,
    locals: &'w mut Locals,
    out: &'w mut Out<'a>,
    stack: Vec<Val>,
    frames: Vec<Frame>,
    fuel_local: u32,
    level_local: u32,
    frame_units: u64,
}

impl<'w, 'a> Walk<'w, 'a> {
    fn new(body: &'w Body<'a>, ctx: &'w ModuleCtx<'w>, locals: &'w mut Locals, out: &'w mut Out<'a>) -> Self {
        let fuel_local = out.local(ValType::I64);
        let level_local = out.local(ValType::I64);
        Self { body, ctx, locals, out, stack: Vec::new(), frames: Vec::new(), fuel_local, level_local, frame_units: 0 }
    }

    fn weakened(&self, w: Weaken) -> bool {
        self.ctx.options.weaken == w
    }

    fn dead(&self) -> bool {
        self.frames.last().is_none_or(|f| f.dead)
    }

    fn pop(&mut self) -> Val {
        let floor = self.frames.last().map_or(0, |f| f.height);
        if self.stack.len() > floor { self.stack.pop().unwrap_or(Val::kept(None)) } else { Val::kept(None) }
    }

    fn pop_n(&mut self, n: usize) {
        for _ in 0..n {
            self.pop();
        }
    }

    /// The top value, if it belongs to the current frame (in unreachable code it may not).
    fn top_mut(&mut self) -> Option<&mut Val> {
        let floor = self.frames.last().map_or(0, |f| f.height);
        if self.stack.len() > floor { self.stack.last_mut() } else { None }
    }

    /// Materializes the pending floats among the top `n` values (deepest first: index 0 is
    /// the deepest) for which `want` holds, spilling what lies above them to scratch locals.
    fn settle(&mut self, n: usize, want: impl Fn(usize) -> bool) -> Result<(), Error> {
        if self.dead() || n == 0 || !self.ctx.options.nan {
            return Ok(());
        }
        let Some(base) = self.stack.len().checked_sub(n) else { return Ok(()) };
        let need: Vec<bool> = (0..n).map(|i| self.stack[base + i].nan.is_pending() && want(i)).collect();
        let Some(first) = need.iter().position(|&b| b) else { return Ok(()) };
        let ty = |v: &Val| v.ty.ok_or_else(|| Error::Internal("a value of unknown type in reachable code".into()));
        let mut spilled = Vec::new();
        let mut per_type: HashMap<u8, usize> = HashMap::new();
        for i in (first + 1..n).rev() {
            let t = ty(&self.stack[base + i])?;
            let slot = per_type.entry(type_key(t)).or_default();
            let l = if self.out.enabled { self.out.scratch(t, *slot) } else { 0 };
            *slot += 1;
            self.out.push(Instruction::LocalSet(l));
            spilled.push(l);
        }
        for (i, &needed) in need.iter().enumerate().skip(first) {
            if i > first {
                let l = spilled.pop().unwrap_or(0);
                self.out.push(Instruction::LocalGet(l));
            }
            if needed {
                let v = &mut self.stack[base + i];
                if let Nan::Pending(sign) = v.nan {
                    let t = v.ty.ok_or_else(|| Error::Internal("a pending value of unknown type".into()))?;
                    v.nan = v.nan.materialized();
                    self.out.materialize(t, sign);
                }
            }
        }
        Ok(())
    }

    /// Materializes the pending floats among the top `n` values.
    fn settle_all(&mut self, n: usize) -> Result<(), Error> {
        self.settle(n, |_| true)
    }

    /// The values a branch carries to the frame `depth` levels up: materialized (they merge).
    fn settle_branch(&mut self, depth: u32, below_top: usize) -> Result<bool, Error> {
        let Some(target) = self.frames.len().checked_sub(1 + depth as usize).and_then(|i| self.frames.get(i)) else {
            return Err(Error::Internal(format!("branch depth {depth} out of range")));
        };
        let (arity, to_function) = (target.label_arity(), target.kind == Kind::Func);
        if !self.weakened(if to_function { Weaken::NanReturns } else { Weaken::NanMerges }) {
            self.settle(arity + below_top, |i| i < arity)?;
        }
        Ok(to_function)
    }

    fn flush_fuel(&mut self) {
        if self.ctx.options.fuel && !self.dead() && !self.weakened(Weaken::FuelSync) {
            self.out.push(Instruction::LocalGet(self.fuel_local));
            self.out.push(Instruction::GlobalSet(self.ctx.fuel_global));
        }
    }

    fn charge(&mut self, amount: u64, check: bool) {
        if !self.ctx.options.fuel || self.dead() {
            return;
        }
        let f = self.fuel_local;
        if amount > 0 {
            self.out.push(Instruction::LocalGet(f));
            self.out.push(Instruction::I64Const(amount.min(i64::MAX as u64) as i64));
            self.out.push(Instruction::I64Sub);
            self.out.push(Instruction::LocalSet(f));
        }
        if check && !self.weakened(Weaken::FuelCheck) {
            self.out.push(Instruction::LocalGet(f));
            self.out.push(Instruction::I64Const(0));
            self.out.push(Instruction::I64LtS);
            self.out.push(Instruction::If(EBlock::Empty));
            self.out.push(Instruction::LocalGet(f));
            self.out.push(Instruction::GlobalSet(self.ctx.fuel_global));
            self.out.push(Instruction::Unreachable);
            self.out.push(Instruction::End);
        }
    }

    fn prologue(&mut self) {
        self.frame_units = stack::frame_units(self.body.locals.len() as u64, self.body.max_operands);
        if self.ctx.options.stack {
            let (g, l) = (self.ctx.stack_global, self.level_local);
            self.out.push(Instruction::GlobalGet(g));
            self.out.push(Instruction::I64Const(self.frame_units as i64));
            self.out.push(Instruction::I64Sub);
            self.out.push(Instruction::LocalTee(l));
            self.out.push(Instruction::GlobalSet(g));
            if !self.weakened(Weaken::StackCheck) {
                self.out.push(Instruction::LocalGet(l));
                self.out.push(Instruction::I64Const(0));
                self.out.push(Instruction::I64LtS);
                self.out.push(Instruction::If(EBlock::Empty));
                self.out.push(Instruction::Unreachable);
                self.out.push(Instruction::End);
            }
        }
        if self.ctx.options.fuel {
            self.out.push(Instruction::GlobalGet(self.ctx.fuel_global));
            self.out.push(Instruction::LocalSet(self.fuel_local));
        }
    }

    /// After a call returns: the callee's fuel use, and this frame's stack level again.
    fn after_call(&mut self) {
        if self.dead() {
            return;
        }
        if self.ctx.options.fuel && !self.weakened(Weaken::FuelSync) {
            self.out.push(Instruction::GlobalGet(self.ctx.fuel_global));
            self.out.push(Instruction::LocalSet(self.fuel_local));
        }
        if self.ctx.options.stack && !self.weakened(Weaken::StackRestore) {
            self.out.push(Instruction::LocalGet(self.level_local));
            self.out.push(Instruction::GlobalSet(self.ctx.stack_global));
        }
    }

    /// Before a tail call: this frame's stack units are given back.
    fn release_frame(&mut self) {
        if self.ctx.options.stack && !self.dead() && !self.weakened(Weaken::StackTailCall) {
            self.out.push(Instruction::LocalGet(self.level_local));
            self.out.push(Instruction::I64Const(self.frame_units as i64));
            self.out.push(Instruction::I64Add);
            self.out.push(Instruction::GlobalSet(self.ctx.stack_global));
        }
    }

    fn set_dead(&mut self) {
        if let Some(f) = self.frames.last_mut() {
            f.dead = true;
            let h = f.height;
            self.stack.truncate(h);
        }
    }

    fn push_results(&mut self, op: &Op<'_>, nan: Nan) {
        for ty in &op.pushed {
            self.stack.push(Val {
                ty: *ty,
                nan: if matches!(ty, Some(ValType::F32 | ValType::F64)) { nan } else { Nan::Kept },
            });
        }
    }

    fn emit_op(&mut self, op: &Op<'a>) -> Result<(), Error> {
        if self.out.enabled {
            self.out.code.push(Piece::Raw(op.raw));
        }
        Ok(())
    }

    /// A call (or tail call) to a function of type `sig`, with `extra` operands above the
    /// arguments (the table index of an indirect call).
    fn call(&mut self, sig_index: u32, extra: usize, tail: bool, op: &Op<'a>) -> Result<(), Error> {
        let n = self.ctx.sig(sig_index)?.params.len();
        if !self.weakened(Weaken::NanEscapes) {
            self.settle(n + extra, |i| i < n)?;
        }
        self.flush_fuel();
        if tail {
            self.release_frame();
        }
        self.emit_op(op)?;
        self.pop_n(n + extra);
        if tail {
            self.set_dead();
        } else {
            self.after_call();
            self.push_results(op, Nan::Kept);
        }
        Ok(())
    }

    fn local_store(&mut self, index: u32) -> Result<(), Error> {
        let i = index as usize;
        let Some(ty) = self.body.locals.get(i).copied() else {
            return Err(Error::Internal(format!("local {index} out of range")));
        };
        if self.dead() || !matches!(ty, ValType::F32 | ValType::F64) || !self.ctx.options.nan {
            return Ok(());
        }
        let weak = self.weakened(Weaken::NanLocals);
        if self.locals.exact_only[i] && !weak {
            self.settle_all(1)?;
        }
        let v = self.stack.last().map_or(Nan::Kept, |v| v.nan);
        if self.out.enabled {
            // The final walk: what is stored must be covered by what `local.get` assumes.
            let cur = self.locals.cur[i];
            if cur.join(v) != Some(cur) && !weak {
                self.settle_all(1)?;
                let v = self.stack.last().map_or(Nan::Kept, |v| v.nan);
                if cur.join(v) != Some(cur) {
                    return Err(Error::Internal(format!("local {index} holds {cur:?} but is given {v:?}")));
                }
            }
            return Ok(());
        }
        match self.locals.next[i].join(v) {
            Some(j) => self.locals.next[i] = j,
            None if weak => self.locals.next[i] = v,
            None => {
                self.locals.exact_only[i] = true;
                self.locals.conflict = true;
                self.locals.next[i] = Nan::Kept;
                self.settle_all(1)?;
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<(), Error> {
        let sig = self.ctx.sig(self.body.type_index)?.clone();
        let body = self.body;
        self.frames.push(Frame {
            kind: Kind::Func,
            height: 0,
            params: Vec::new(),
            results: sig.results.clone(),
            entry: Vec::new(),
            dead: false,
            parent_dead: false,
        });
        self.prologue();
        let charges = &body.charges;
        for (i, op) in body.ops.iter().enumerate() {
            let loop_top = i > 0 && matches!(body.ops[i - 1].op, Operator::Loop { .. });
            if (charges[i] > 0 || i == 0 || loop_top) && !self.weakened(Weaken::FuelCharge) {
                self.charge(charges[i], i == 0 || loop_top);
            }
            self.step(op)?;
            if self.frames.is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op<'a>) -> Result<(), Error> {
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
