//! Reading one function body: validating it operator by operator, and recording what the
//! validator knew of each (what it pops and pushes) and the fuel charged before it.

use wasmparser::{FuncValidator, FunctionBody, Operator, ValType, ValidatorResources};

use super::ModuleCtx;
use crate::instrument::{Error, fuel};

/// One operator with what the validator knew about it.
pub(super) struct Op<'a> {
    pub(super) op: Operator<'a>,
    /// Its bytes, copied as they are (no index changes).
    pub(super) raw: &'a [u8],
    pub(super) pops: u32,
    /// The types of the values it leaves on the stack, deepest first (`None`: unknown, only in
    /// unreachable code).
    pub(super) pushed: Vec<Option<ValType>>,
}

/// A validated function body, operator by operator.
pub(crate) struct Body<'a> {
    pub(super) ops: Vec<Op<'a>>,
    /// Parameters then declared locals.
    pub(super) locals: Vec<ValType>,
    pub(super) params: usize,
    pub(super) declared: Vec<(u32, ValType)>,
    pub(super) max_operands: u64,
    pub(super) type_index: u32,
    /// The fuel charged before each operator (negative: given back), [`fuel::plan`].
    pub(super) charges: Vec<i64>,
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
    let options = ctx.options;
    let charges = fuel::plan(
        &ops.iter().map(|o| o.op.clone()).collect::<Vec<_>>(),
        options.merge_loop_charges,
        options.weaken != crate::instrument::Weaken::FuelLoopRefund,
    );
    Ok(Body { ops, locals, params, declared, max_operands, type_index, charges })
}
