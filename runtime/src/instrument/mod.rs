//! The admission pass: a wasm-to-wasm rewrite that makes a module deterministic and metered by
//! itself, so the engine can run it with Cranelift's NaN canonicalization and wasmtime's fuel
//! off, at native speed, with the same results on every CPU and architecture.
//!
//! It runs once per module, before compilation, and its output is what gets compiled and
//! cached (the compile cache key includes [`describe`], so a changed pass never reuses stale
//! code). Three concerns, one walk over each function ([`func`]):
//!
//! * [`nan`]: lazy NaN canonicalization, bit-identical to the eager engine;
//! * [`fuel`]: fuel counted in the module, with the host's WASI charges on the same counter;
//! * [`stack`]: a stack limit in wasm terms, the same depth on every architecture;
//! * [`interrupt`]: a wall-clock stop the host can raise from another thread, checked by the
//!   fuel check's own comparison (no call on the path, unlike wasmtime's epochs).
//!
//! The module is validated first against exactly the proposals the engine enables
//! ([`FEATURES`]); anything else (exceptions, GC, threads, memory64, multi-memory...) is refused
//! with the validator's reason. Function indices, globals, tables and custom sections (names
//! included) are kept; the pass adds two exported globals ([`fuel::FUEL_GLOBAL`],
//! [`stack::STACK_GLOBAL`]), with [`Options::interrupt`] a 16-byte memory after the module's
//! own ([`interrupt::INTERRUPT_MEMORY`]), and turns a start function into an export
//! ([`START_EXPORT`]) that the host calls once it has set them.

pub mod fuel;
mod func;
pub mod interrupt;
pub mod nan;
pub mod stack;

use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, Function, GlobalSection, GlobalType, MemorySection, MemoryType,
    Module, RawSection, SectionId, ValType as EVal,
};
use wasmparser::{Parser, Payload, ValidPayload, Validator, WasmFeatures};

use func::{ModuleCtx, Sig};

/// The proposals the engine enables, and the only ones a module may use: WebAssembly 2.0
/// (MVP, mutable globals, sign extension, saturating float-to-int, multi-value, bulk memory,
/// reference types, SIMD) plus relaxed SIMD, tail calls and extended constant expressions.
/// (Without wasmparser's `GC_TYPES` pseudo-feature, which wasmtime is built without.)
pub const FEATURES: WasmFeatures = WasmFeatures::WASM2
    .union(WasmFeatures::RELAXED_SIMD)
    .union(WasmFeatures::TAIL_CALL)
    .union(WasmFeatures::EXTENDED_CONST)
    .difference(WasmFeatures::GC_TYPES);

/// The pass's version: bump it with any change to what it emits that a receipt can observe.
/// (The interrupt check changes no outcome a receipt can attest, since a wall-clock stop is
/// never deterministic: it is keyed into the compile cache by its option, not hashed here.)
pub const PASS_VERSION: &str = "tidepool-instrument-1";

/// The revision of the code the pass emits: bump it with any change to what it emits that no
/// receipt can observe (how a check is shaped, say). It keys the compile cache, so compiled
/// code of an older revision is not reused, and leaves the engine hash alone.
pub const CODE_REVISION: u32 = 5;

/// The export the start function is moved to (called by the host after setting the globals).
pub const START_EXPORT: &str = "tidepool:start";

/// Which checks the pass inserts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Lazy NaN canonicalization ([`nan`]).
    pub nan: bool,
    /// Fuel counted in the module ([`fuel`]).
    pub fuel: bool,
    /// The stack limit in wasm terms ([`stack`]).
    pub stack: bool,
    /// The interrupt check ([`interrupt`]): a memory of its own, which the engine must allow
    /// (multi-memory) besides [`FEATURES`]. Off by default: engines turn it on.
    pub interrupt: bool,
    /// A loop's first charge made on the edges into it, merged with the charges before them
    /// ([`fuel::plan`]): the same counts at every point a receipt can observe, one subtraction
    /// fewer per iteration. Off only to compare the two in tests.
    #[doc(hidden)]
    pub merge_loop_charges: bool,
    /// Leaves out one kind of inserted check, to show that the tests notice. Never in an engine.
    #[doc(hidden)]
    pub weaken: Weaken,
}

impl Default for Options {
    fn default() -> Self {
        Self { nan: true, fuel: true, stack: true, interrupt: false, merge_loop_charges: true, weaken: Weaken::Nothing }
    }
}

/// One kind of inserted check left out (see `runtime/tests/sandbox/differential.rs`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weaken {
    Nothing,
    /// No materialization at stores, reinterprets, `global.set`, call arguments, `copysign`.
    NanEscapes,
    /// No materialization at branches, block ends and `select`.
    NanMerges,
    /// No materialization of a function's results (its `end`, `return`, branches to it).
    NanReturns,
    /// Locals hold pending values even where they merge with kept bits.
    NanLocals,
    /// No canonicalization of v128 float lanes.
    V128,
    /// No fuel check at loop tops and function entry.
    FuelCheck,
    /// No fuel charged at all.
    FuelCharge,
    /// A loop's charge made on a conditional branch into it is not given back when the branch
    /// is not taken ([`fuel::plan`]).
    FuelLoopRefund,
    /// The fuel counter is not handed over at calls: not written back before a call or a
    /// return, not read again after a call.
    FuelSync,
    /// No stack check at function entry.
    StackCheck,
    /// No interrupt check at loop tops and function entry.
    InterruptCheck,
    /// A caller does not write its stack level back after a call.
    StackRestore,
    /// A tail call does not give its frame's units back.
    StackTailCall,
}

/// Why a module could not be rewritten; all become `InvalidModule`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module does not decode or validate (the validator's error).
    #[error("{0}")]
    Invalid(#[from] wasmparser::BinaryReaderError),
    /// The module is valid but uses what the pass does not rewrite.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The pass broke one of its own invariants: a bug.
    #[error("internal error of the instrumentation pass: {0}")]
    Internal(String),
}

/// The pass's identity for hashes: version, options and cost table (not the interrupt check:
/// see [`PASS_VERSION`]).
pub fn describe(options: &Options) -> String {
    format!(
        "pass={PASS_VERSION} nan={} fuel={} stack={} fuel_costs=[{}] frame_units={} bytes_per_unit={} native_slack={}",
        options.nan,
        options.fuel,
        options.stack,
        fuel::COST_TABLE,
        stack::FRAME_UNITS,
        stack::BYTES_PER_UNIT,
        stack::NATIVE_SLACK,
    )
}

/// Sections in the order the binary format requires (custom sections aside).
fn rank(id: u8) -> u8 {
    match id {
        13 => 55, // tag: after memory
        12 => 95, // data count: after elements
        n => n * 10,
    }
}

/// Rewrites `bytes`. The module is validated on the way.
pub fn instrument(bytes: &[u8], options: &Options) -> Result<Vec<u8>, Error> {
    // The start section comes after the export section it becomes part of: find it first.
    let start = Parser::new(0).parse_all(bytes).find_map(|p| match p {
        Ok(Payload::StartSection { func, .. }) => Some(func),
        _ => None,
    });
    let mut validator = Validator::new_with_features(FEATURES);
    let mut module = Module::new();
    let mut types: Vec<Option<Sig>> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut globals = 0u32;
    // The module's memories (imported and defined): the interrupt memory comes after them.
    let mut memories = 0u32;
    let mut added_memory = !options.interrupt;
    let mut added_globals = false;
    let mut added_exports = false;
    // The rewritten code section, and how many bodies it still waits for.
    let mut code: Option<(CodeSection, u32)> = None;
    let mut imported_funcs = 0usize;

    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload?;
        let valid = validator.payload(&payload)?;
        let section_rank = match &payload {
            Payload::CustomSection(_) | Payload::Version { .. } | Payload::End(_) => None,
            Payload::CodeSectionStart { .. } | Payload::CodeSectionEntry(_) => Some(rank(SectionId::Code as u8)),
            other => other.as_section().map(|(id, _)| rank(id)),
        };
        if let Some(r) = section_rank {
            if !added_memory && r > rank(SectionId::Memory as u8) {
                module.section(&interrupt::memory(MemorySection::new()));
                added_memory = true;
            }
            if !added_globals && r > rank(SectionId::Global as u8) {
                module.section(&our_globals(GlobalSection::new()));
                added_globals = true;
            }
            if !added_exports && r > rank(SectionId::Export as u8) {
                module.section(&our_exports(ExportSection::new(), globals, start, interrupt_memory(options, memories)));
                added_exports = true;
            }
        }
        match payload {
            Payload::TypeSection(reader) => {
                for group in reader.clone() {
                    for ty in group?.into_types() {
                        types.push(match ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                Some(Sig { params: f.params().to_vec(), results: f.results().to_vec() })
                            }
                            _ => None,
                        });
                    }
                }
                copy(&mut module, bytes, SectionId::Type, reader.range());
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    match import?.ty {
                        wasmparser::TypeRef::Func(t) => func_types.push(t),
                        wasmparser::TypeRef::Global(_) => globals += 1,
                        wasmparser::TypeRef::Memory(_) => memories += 1,
                        _ => {}
                    }
                }
                imported_funcs = func_types.len();
                copy(&mut module, bytes, SectionId::Import, reader.range());
            }
            Payload::FunctionSection(reader) => {
                for t in reader.clone() {
                    func_types.push(t?);
                }
                copy(&mut module, bytes, SectionId::Function, reader.range());
            }
            Payload::MemorySection(reader) if options.interrupt => {
                let mut section = MemorySection::new();
                for memory in reader {
                    let m = memory?;
                    section.memory(MemoryType {
                        minimum: m.initial,
                        maximum: m.maximum,
                        memory64: m.memory64,
                        shared: m.shared,
                        page_size_log2: m.page_size_log2,
                    });
                    memories += 1;
                }
                module.section(&interrupt::memory(section));
                added_memory = true;
            }
            Payload::GlobalSection(reader) => {
                let mut section = GlobalSection::new();
                let end = reader.range().end;
                let starts: Vec<usize> =
                    reader.clone().into_iter_with_offsets().map(|g| g.map(|(at, _)| at)).collect::<Result<_, _>>()?;
                for (i, &at) in starts.iter().enumerate() {
                    section.raw(&bytes[at..starts.get(i + 1).copied().unwrap_or(end)]);
                }
                globals += reader.count();
                module.section(&our_globals(section));
                added_globals = true;
            }
            Payload::ExportSection(reader) => {
                let mut section = ExportSection::new();
                for export in reader {
                    let export = export?;
                    if export.name.starts_with("tidepool:") {
                        let name = export.name;
                        return Err(Error::Unsupported(format!("the export name `{name}` is reserved")));
                    }
                    let kind = match export.kind {
                        wasmparser::ExternalKind::Func => ExportKind::Func,
                        wasmparser::ExternalKind::Table => ExportKind::Table,
                        wasmparser::ExternalKind::Memory => ExportKind::Memory,
                        wasmparser::ExternalKind::Global => ExportKind::Global,
                        wasmparser::ExternalKind::Tag => ExportKind::Tag,
                        other => return Err(Error::Unsupported(format!("an export of kind {other:?}"))),
                    };
                    section.export(export.name, kind, export.index);
                }
                module.section(&our_exports(section, globals, start, interrupt_memory(options, memories)));
                added_exports = true;
            }
            // Called by the host instead, once it has set the counters (see `START_EXPORT`).
            Payload::StartSection { .. } => {}
            Payload::CodeSectionStart { count, .. } => {
                if count == 0 {
                    module.section(&CodeSection::new());
                } else {
                    code = Some((CodeSection::new(), count));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let ValidPayload::Func(f, _) = valid else {
                    return Err(Error::Internal("a function body the validator did not hand out".into()));
                };
                let Some((section, left)) = code.as_mut() else {
                    return Err(Error::Internal("a function body outside the code section".into()));
                };
                let index = (imported_funcs + section.len() as usize) as u32;
                let ctx = ModuleCtx {
                    types: &types,
                    func_types: &func_types,
                    fuel_global: globals,
                    stack_global: globals + 1,
                    interrupt_memory: interrupt_memory(options, memories),
                    options,
                };
                let read = func::read(f.into_validator(Default::default()), bytes, &body, &ctx, index)?;
                section.function(&encode(func::rewrite(&read, &ctx)?)?);
                *left -= 1;
                if *left == 0
                    && let Some((section, _)) = code.take()
                {
                    module.section(&section);
                }
            }
            Payload::End(_) | Payload::Version { .. } => {}
            Payload::CustomSection(reader) => {
                module.section(&RawSection { id: SectionId::Custom as u8, data: &bytes[reader.range()] });
            }
            other => match other.as_section() {
                Some((id, range)) => {
                    module.section(&RawSection { id, data: &bytes[range] });
                }
                None => return Err(Error::Unsupported("a section this engine does not know".into())),
            },
        }
    }
    if !added_memory {
        module.section(&interrupt::memory(MemorySection::new()));
    }
    if !added_globals {
        module.section(&our_globals(GlobalSection::new()));
    }
    if !added_exports {
        module.section(&our_exports(ExportSection::new(), globals, start, interrupt_memory(options, memories)));
    }
    Ok(module.finish())
}

fn encode(rewritten: func::Rewritten<'_>) -> Result<Function, Error> {
    let mut locals: Vec<(u32, EVal)> = Vec::new();
    for (n, ty) in rewritten.declared.iter().copied() {
        locals.push((n, val_type(ty)?));
    }
    for ty in rewritten.extra {
        locals.push((1, val_type(ty)?));
    }
    let mut function = Function::new(locals);
    for piece in &rewritten.code {
        match piece {
            func::Piece::Raw(bytes) => function.raw(bytes.iter().copied()),
            func::Piece::New(i) => function.instruction(i),
        };
    }
    Ok(function)
}

fn copy(module: &mut Module, bytes: &[u8], id: SectionId, range: std::ops::Range<usize>) {
    module.section(&RawSection { id: id as u8, data: &bytes[range] });
}

fn our_globals(mut section: GlobalSection) -> GlobalSection {
    let ty = GlobalType { val_type: EVal::I64, mutable: true, shared: false };
    section.global(ty, &ConstExpr::i64_const(0));
    section.global(ty, &ConstExpr::i64_const(0));
    section
}

/// The interrupt memory's index, when the pass adds one: after the module's `memories`.
fn interrupt_memory(options: &Options, memories: u32) -> Option<u32> {
    options.interrupt.then_some(memories)
}

/// Our exports; `globals` is the number of globals the module had (ours come right after).
fn our_exports(mut section: ExportSection, globals: u32, start: Option<u32>, interrupt: Option<u32>) -> ExportSection {
    section.export(fuel::FUEL_GLOBAL, ExportKind::Global, globals);
    section.export(stack::STACK_GLOBAL, ExportKind::Global, globals + 1);
    if let Some(memory) = interrupt {
        section.export(interrupt::INTERRUPT_MEMORY, ExportKind::Memory, memory);
    }
    if let Some(f) = start {
        section.export(START_EXPORT, ExportKind::Func, f);
    }
    section
}

fn val_type(ty: wasmparser::ValType) -> Result<EVal, Error> {
    use wasmparser::ValType as V;
    Ok(match ty {
        V::I32 => EVal::I32,
        V::I64 => EVal::I64,
        V::F32 => EVal::F32,
        V::F64 => EVal::F64,
        V::V128 => EVal::V128,
        V::Ref(r) if r == wasmparser::RefType::FUNCREF => EVal::Ref(wasm_encoder::RefType::FUNCREF),
        V::Ref(r) if r == wasmparser::RefType::EXTERNREF => EVal::Ref(wasm_encoder::RefType::EXTERNREF),
        V::Ref(r) => return Err(Error::Unsupported(format!("locals of type {r}"))),
    })
}
