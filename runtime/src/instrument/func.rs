//! Rewriting one function body: a single walk over its operators inserts the stack-height
//! prologue, the fuel charges and checks, and the NaN materializations, after a fixed point of
//! the same walk has found what each local may hold.
//!
//! The walk keeps an abstract operand stack (each value's type and [`Nan`] state) and the
//! control frames, the way the validator does. Unreachable code is copied as it is.

use std::collections::HashMap;

use wasm_encoder::{BlockType as EBlock, Instruction};
use wasmparser::{BlockType, ValType};

use super::nan::Nan;
use super::{Error, Options, Weaken, fuel, interrupt, stack};

mod body;
mod out;
mod step;

use body::Op;
pub(crate) use body::{Body, read};
pub(crate) use out::Piece;
use out::{Out, type_key};

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
    /// The interrupt memory's index, when the pass adds one ([`super::interrupt`]).
    pub interrupt_memory: Option<u32>,
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

    /// Charges `amount` fuel; at a check point (function entry, loop top) also stops the guest
    /// when its counter is below the floor: zero, or with the interrupt check the interrupt
    /// memory's floor, which the host raises above every counter to stop the guest.
    fn charge(&mut self, amount: i64, check: bool) {
        if self.dead() {
            return;
        }
        let fuel = self.ctx.options.fuel;
        let f = self.fuel_local;
        if fuel && amount != 0 && !self.weakened(Weaken::FuelCharge) {
            self.out.push(Instruction::LocalGet(f));
            if amount > 0 {
                self.out.push(Instruction::I64Const(amount));
                self.out.push(Instruction::I64Sub);
            } else {
                self.out.push(Instruction::I64Const(-amount));
                self.out.push(Instruction::I64Add);
            }
            self.out.push(Instruction::LocalSet(f));
        }
        if !check {
            return;
        }
        let fuel_check = fuel && !self.weakened(Weaken::FuelCheck);
        let interrupt = self.ctx.interrupt_memory.filter(|_| !self.weakened(Weaken::InterruptCheck));
        if !fuel_check && interrupt.is_none() {
            return;
        }
        // One comparison, `counter < floor`, fused by Cranelift with its branch: two tests
        // or-ed together would materialize both as integers on every loop iteration (csv-stats
        // ran 10 % slower that way), and two branches cost one more test and branch per check.
        self.out.push(if fuel_check { Instruction::LocalGet(f) } else { Instruction::I64Const(0) });
        match interrupt {
            Some(memory_index) => {
                self.out.push(Instruction::I32Const(0));
                // Atomic, so it is loaded afresh at every check (see `interrupt`).
                self.out.push(Instruction::I64AtomicLoad(interrupt::floor(memory_index)));
            }
            None => self.out.push(Instruction::I64Const(0)),
        }
        self.out.push(Instruction::I64LtS);
        self.stop_if(interrupt);
    }

    /// Stops the guest when the `i32` on the stack is non-zero: writes the counter back, marks
    /// the interrupt memory [`interrupt::SEEN`] (whatever failed: a counter below zero is read
    /// as `out_of_fuel` first), traps.
    fn stop_if(&mut self, interrupt_memory: Option<u32>) {
        self.out.push(Instruction::If(EBlock::Empty));
        if self.ctx.options.fuel {
            self.out.push(Instruction::LocalGet(self.fuel_local));
            self.out.push(Instruction::GlobalSet(self.ctx.fuel_global));
        }
        if let Some(memory_index) = interrupt_memory {
            self.out.push(Instruction::I32Const(0));
            self.out.push(Instruction::I32Const(i32::from(interrupt::SEEN)));
            self.out.push(Instruction::I32AtomicStore8(interrupt::seen(memory_index)));
        }
        self.out.push(Instruction::Unreachable);
        self.out.push(Instruction::End);
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
            let check = fuel::checks_after(i.checked_sub(1).map(|k| &body.ops[k].op));
            if charges[i] != 0 || check {
                self.charge(charges[i], check);
            }
            self.step(op)?;
            if self.frames.is_empty() {
                break;
            }
        }
        Ok(())
    }
}
