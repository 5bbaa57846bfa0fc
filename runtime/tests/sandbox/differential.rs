//! The admission pass against the engine it replaces, on generated and hand-written modules:
//!
//! * (i) the rewritten module gives the same results on an engine with Cranelift's NaN
//!   canonicalization on as on one with it off;
//! * (ii) the rewritten module with canonicalization off gives exactly what the original gives
//!   on the eager engine (canonicalization on), bit for bit: results, memory, globals, traps;
//! * fuel: the rewritten module runs out at the same point on every run, and endless loops
//!   and recursions end (`out_of_fuel`, the wasm-level stack limit).
//!
//! Results are compared as bits. Generated modules come from `wasm-smith` (float-heavy, SIMD
//! and relaxed SIMD, `ensure_termination`), their exports called with NaNs of several payloads
//! and signs, infinities, zeros and ordinary numbers. The test command runs a bounded number
//! ([`DEFAULT_MODULES`]); `TIDEPOOL_DIFF_MODULES=N` runs more (`cargo test -p tidepool-runtime
//! --test sandbox differential -- --nocapture`, e.g. N = 20000 takes minutes).
//!
//! `every_weakened_check_is_caught` shows the tests can fail: it leaves out each kind of check
//! the pass inserts ([`Weaken`]) and expects a difference every time.

use tidepool_runtime::instrument::{
    self, Options, Weaken,
    fuel::FUEL_GLOBAL,
    interrupt::{self, INTERRUPT_MEMORY},
    stack::STACK_GLOBAL,
};

use crate::smith;
use wasmtime::{Config, Engine, Instance, Module, Store, Val, ValType};

/// Generated modules per test run (more with `TIDEPOOL_DIFF_MODULES`).
const DEFAULT_MODULES: u64 = 300;

/// How an engine treats NaNs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Canon {
    On,
    Off,
}

fn engine(canon: Canon) -> Engine {
    let mut c = Config::new();
    c.cranelift_nan_canonicalization(canon == Canon::On)
        .relaxed_simd_deterministic(true)
        .wasm_features(wasmtime::WasmFeatures::all(), false)
        .wasm_features(instrument::FEATURES, true)
        .wasm_backtrace_max_frames(None)
        .max_wasm_stack(1 << 20)
        .async_stack_size(8 << 20);
    Engine::new(&c).unwrap()
}

struct Engines {
    on: Engine,
    off: Engine,
    /// Canonicalization off, with wasmtime's fuel as a guard: a module whose own fuel checks
    /// were left out must still stop.
    guarded: Engine,
}

fn engines() -> &'static Engines {
    static E: std::sync::OnceLock<Engines> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let mut c = Config::new();
        // Custom page sizes and atomics for the interrupt memory (`instrument::interrupt`).
        c.wasm_features(wasmtime::WasmFeatures::THREADS, true);
        c.consume_fuel(true)
            .wasm_custom_page_sizes(true)
            .wasm_backtrace_max_frames(None)
            .max_wasm_stack(1 << 20)
            .async_stack_size(8 << 20);
        Engines { on: engine(Canon::On), off: engine(Canon::Off), guarded: Engine::new(&c).unwrap() }
    })
}

/// Everything a run left that can be observed, as bits.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Observed {
    /// Instantiation (data segments, start function): the trap, if any.
    start: Result<(), String>,
    /// Per export call: results as bits, or the trap.
    calls: Vec<Result<Vec<u128>, String>>,
    memories: Vec<Vec<u8>>,
    globals: Vec<(String, u128)>,
    /// The rewritten module's fuel counter after its start and after each call (empty for the
    /// original).
    fuel: Vec<i64>,
}

fn bits(v: &Val) -> u128 {
    match v {
        Val::I32(x) => *x as u32 as u128,
        Val::I64(x) => *x as u64 as u128,
        Val::F32(x) => *x as u128,
        Val::F64(x) => *x as u128,
        Val::V128(x) => x.as_u128(),
        Val::FuncRef(f) => u128::from(f.is_some()),
        Val::ExternRef(e) => u128::from(e.is_some()),
        _ => 0,
    }
}

/// Seed values for float parameters: NaNs with payloads and both signs, infinities, zeros.
const F32_SEEDS: &[u32] =
    &[0x7fc0_0000, 0xffc0_0000, 0x7fa0_0001, 0xff80_0123, 0x7f80_0000, 0x8000_0000, 0, 0x3fc0_0000];
const F64_SEEDS: &[u64] = &[
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff4_0000_0000_0001,
    0xfff0_0000_dead_beef,
    0x7ff0_0000_0000_0000,
    0x8000_0000_0000_0000,
    0,
    0x3ff8_0000_0000_0000,
];

/// The argument of type `ty` at position `i` in call round `round`: over the rounds, each
/// float parameter meets several NaNs while each integer one takes zero and non-zero values.
fn arg(ty: &ValType, i: usize, round: usize) -> Option<Val> {
    let n = i + round;
    Some(match ty {
        ValType::I32 => Val::I32([0, 1, -1, 7, 0x7fc0_0000u32 as i32][(i + 2 * round) % 5]),
        ValType::I64 => Val::I64([0, 1, -1, 0x7ff8_0000_0000_0001][(i + 2 * round) % 4]),
        ValType::F32 => Val::F32(F32_SEEDS[n % F32_SEEDS.len()]),
        ValType::F64 => Val::F64(F64_SEEDS[n % F64_SEEDS.len()]),
        ValType::V128 => {
            let lanes = [F32_SEEDS[n % 8], F32_SEEDS[(n + 1) % 8], F32_SEEDS[(n + 3) % 8], F32_SEEDS[(n + 5) % 8]];
            let v = lanes.iter().enumerate().fold(0u128, |acc, (i, l)| acc | (u128::from(*l) << (32 * i)));
            Val::V128(v.into())
        }
        ValType::Ref(r) if r.is_nullable() => Val::null_ref(r.heap_type()),
        _ => return None,
    })
}

/// Instantiates `bytes` on `engine` and calls every exported function (in export order, a few
/// times with different arguments), then reads memories and globals.
fn observe(engine: &Engine, bytes: &[u8], instrumented: bool, fuel: i64) -> Result<Observed, String> {
    let module = Module::new(engine, bytes).map_err(|e| format!("compile: {e:#}"))?;
    let mut store = Store::new(engine, ());
    let instance = match Instance::new(&mut store, &module, &[]) {
        Ok(i) => i,
        Err(e) => {
            return Ok(Observed {
                start: Err(trap_name(&e)),
                calls: vec![],
                memories: vec![],
                globals: vec![],
                fuel: vec![],
            });
        }
    };
    // The host sets the counters before every job; here, before every call.
    let counters = |store: &mut Store<()>| -> Result<(), String> {
        if instrumented {
            for (name, value) in [(FUEL_GLOBAL, fuel), (STACK_GLOBAL, 5_000)] {
                let g = instance.get_global(&mut *store, name).ok_or("no counter")?;
                g.set(&mut *store, Val::I64(value)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    };
    let stack_left = |store: &mut Store<()>| {
        instance.get_global(&mut *store, STACK_GLOBAL).and_then(|g| g.get(&mut *store).i64()).unwrap_or(0)
    };
    let fuel_left =
        |store: &mut Store<()>| instance.get_global(&mut *store, FUEL_GLOBAL).and_then(|g| g.get(store).i64());
    let mut fuels = Vec::new();
    counters(&mut store)?;
    if let Some(f) = instance.get_func(&mut store, instrument::START_EXPORT) {
        let started = f.call(&mut store, &[], &mut []);
        fuels.extend(fuel_left(&mut store));
        if let Err(e) = started {
            let start = Err(if stack_left(&mut store) < 0 { "StackLimit".into() } else { trap_name(&e) });
            return Ok(Observed { start, calls: vec![], memories: vec![], globals: vec![], fuel: fuels });
        }
    }
    let exports: Vec<(String, wasmtime::Extern)> =
        instance.exports(&mut store).map(|e| (e.name().to_string(), e.into_extern())).collect();
    let mut calls = Vec::new();
    for round in 0..4 {
        for (name, ext) in &exports {
            let wasmtime::Extern::Func(f) = ext else { continue };
            if name.starts_with("tidepool:") {
                continue;
            }
            let ty = f.ty(&store);
            let Some(args) = ty.params().enumerate().map(|(i, t)| arg(&t, i, round)).collect::<Option<Vec<_>>>() else {
                continue;
            };
            let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
            counters(&mut store)?;
            calls.push(match f.call(&mut store, &args, &mut results) {
                Ok(()) => Ok(results.iter().map(bits).collect()),
                Err(_) if instrumented && stack_left(&mut store) < 0 => Err("StackLimit".into()),
                Err(e) => Err(trap_name(&e)),
            });
            fuels.extend(fuel_left(&mut store));
        }
    }
    let mut memories = Vec::new();
    let mut globals = Vec::new();
    for (name, ext) in &exports {
        match ext {
            wasmtime::Extern::Memory(m) => memories.push(m.data(&store).to_vec()),
            wasmtime::Extern::Global(g) if !name.starts_with("tidepool:") => {
                globals.push((name.clone(), bits(&g.get(&mut store))))
            }
            _ => {}
        }
    }
    Ok(Observed { start: Ok(()), calls, memories, globals, fuel: fuels })
}

/// Whether a run hit a stack limit, whose depth legitimately differs between the native
/// limit of the original and the wasm-level limit of the rewritten module.
fn overflowed(o: &Observed) -> bool {
    std::iter::once(o.start.clone().map(|()| Vec::new()))
        .chain(o.calls.iter().cloned())
        .any(|c| matches!(c, Err(t) if t == "StackOverflow" || t == "StackLimit"))
}

/// Runs the three comparisons on one module; `Err` describes the first difference.
fn compare(original: &[u8], options: &Options) -> Result<(), String> {
    let e = engines();
    let rewritten = instrument::instrument(original, options).map_err(|e| format!("instrument: {e}"))?;
    let fuel = 1 << 40;
    let eager = observe(&e.on, original, false, 0)?;
    let off = observe(&e.off, &rewritten, true, fuel)?;
    let on = observe(&e.on, &rewritten, true, fuel)?;
    if off != on {
        return Err(format!("(i) canonicalization on and off differ:\n  off {off:?}\n  on  {on:?}"));
    }
    // Loops charged on their edges count exactly as loops charged at their tops: with fuel to
    // spare, and with so little that calls run out part way.
    let plain = Options { merge_loop_charges: false, ..options.clone() };
    let plain = instrument::instrument(original, &plain).map_err(|e| format!("instrument: {e}"))?;
    for fuel in [fuel, 40, 700] {
        let merged = if fuel == 1 << 40 { off.clone() } else { observe(&e.off, &rewritten, true, fuel)? };
        let unmerged = observe(&e.off, &plain, true, fuel)?;
        if merged != unmerged {
            return Err(format!(
                "loops charged on their edges count otherwise (fuel {fuel}):\n  edges {merged:?}\n  tops  {unmerged:?}"
            ));
        }
    }
    let off = Observed { fuel: Vec::new(), ..off };
    if !overflowed(&eager) && !overflowed(&off) && eager != off {
        return Err(format!(
            "(ii) the rewritten module differs from the eager engine:\n  eager {eager:?}\n  ours  {off:?}"
        ));
    }
    Ok(())
}

/// A float-heavy generated module, or `None` when the bytes did not make one.
fn generated(seed: u64) -> Option<Vec<u8>> {
    let config = wasm_smith::Config {
        max_imports: 0,
        min_funcs: 1,
        max_funcs: 6,
        max_instructions: 120,
        max_memories: 1,
        max_memory32_bytes: 1 << 20,
        max_tables: 1,
        max_table_elements: 1_000,
        max_globals: 6,
        export_everything: true,
        allow_start_export: true,
        ..smith::config()
    };
    let data = smith::bytes(seed, 4096);
    let mut u = arbitrary::Unstructured::new(&data);
    let mut module = wasm_smith::Module::new(config, &mut u).ok()?;
    module.ensure_termination(2_000).ok()?;
    let bytes = module.to_bytes();
    // Only modules the engine accepts: the others are refused at admission (tested elsewhere).
    wasmparser::Validator::new_with_features(instrument::FEATURES).validate_all(&bytes).ok()?;
    Some(bytes)
}

fn modules() -> u64 {
    std::env::var("TIDEPOOL_DIFF_MODULES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_MODULES)
}

#[test]
fn generated_modules_give_the_eager_engines_bits() {
    let (mut tried, mut failures) = (0, Vec::new());
    for seed in 0..modules() {
        let started = std::time::Instant::now();
        let Some(wasm) = generated(seed) else { continue };
        tried += 1;
        if let Err(e) = compare(&wasm, &Options::default()) {
            failures.push(format!("seed {seed}: {e}"));
        }
        if started.elapsed() > std::time::Duration::from_secs(1) {
            eprintln!("seed {seed}: {:?}", started.elapsed());
            if let Ok(dir) = std::env::var("TIDEPOOL_DIFF_DUMP") {
                std::fs::write(format!("{dir}/seed-{seed}.wasm"), &wasm).unwrap();
            }
        }
    }
    assert!(tried > modules() / 2, "only {tried} modules generated");
    assert!(failures.is_empty(), "{} of {tried} modules differ:\n{}", failures.len(), failures.join("\n"));
}

/// Hand-written cases, each aimed at one rule of the pass. Every export is called (most cases
/// export one, `run`); results, memory and globals are compared.
pub const CASES: &[(&str, &str)] = &[
    (
        "a NaN-boxed f64 copied by load and store keeps its payload",
        r#"(module (memory (export "m") 1)
          (func (export "run") (result i64)
            (i64.store (i32.const 0) (i64.const 0x7ff4000000000abc))
            (f64.store (i32.const 8) (f64.load (i32.const 0)))
            (i64.load (i32.const 8))))"#,
    ),
    (
        "copysign takes the sign of a NaN's bits",
        r#"(module
          (func (export "run") (param f32) (result f32)
            (f32.copysign (f32.const 1) (f32.div (local.get 0) (f32.const 1)))))"#,
    ),
    (
        "store(x); store(-x) of a computed NaN",
        r#"(module (memory (export "m") 1)
          (func (export "run") (param f64)
            (local $x f64)
            (local.set $x (f64.add (local.get 0) (f64.const 1)))
            (f64.store (i32.const 0) (local.get $x))
            (f64.store (i32.const 8) (f64.neg (local.get $x)))
            (f64.store (i32.const 16) (f64.abs (f64.neg (local.get $x))))
            (f64.store (i32.const 24) (f64.copysign (local.get $x) (f64.const -2)))))"#,
    ),
    (
        "a loop left by its first branch, or by not taking its branch back (charged on its edges)",
        r#"(module
          (func (export "run") (param $stop i32) (result i32)
            (local $i i32) (local $n i32)
            (block $done
              (loop $l
                (br_if $done (i32.ge_u (local.get $i) (local.get $stop)))
                (local.set $n (i32.add (local.get $n) (local.get $i)))
                (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 5)))))
            (local.get $n)))"#,
    ),
    (
        "reinterpret of a computed NaN",
        r#"(module
          (func (export "run") (param f32) (result i32)
            (i32.reinterpret_f32 (f32.mul (local.get 0) (f32.const 2)))))"#,
    ),
    (
        "select between kept bits and a computed NaN",
        r#"(module
          (func (export "run") (param f32 i32) (result i32)
            (i32.reinterpret_f32
              (select (local.get 0) (f32.sqrt (local.get 0)) (local.get 1)))))"#,
    ),
    (
        "a local that holds kept bits on one path and a computed NaN on the other",
        r#"(module
          (func (export "run") (param f64 i32) (result i64)
            (local $v f64)
            (local.set $v (local.get 0))
            (if (local.get 1) (then (local.set $v (f64.sub (local.get 0) (local.get 0)))))
            (i64.reinterpret_f64 (local.get $v))))"#,
    ),
    (
        "a loop carrying a computed value through a local, then a store",
        r#"(module (memory (export "m") 1)
          (func (export "run") (param f32)
            (local $z f32) (local $i i32)
            (loop $l
              (local.set $z (f32.add (f32.mul (local.get $z) (local.get $z)) (local.get 0)))
              (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 5))))
            (f32.store (i32.const 0) (local.get $z))))"#,
    ),
    (
        "block results and branches carrying computed NaNs",
        r#"(module
          (func $id (param f64) (result f64) (local.get 0))
          (func (export "run") (param f64 i32) (result i64)
            (i64.reinterpret_f64
              (call $id
                (block (result f64)
                  (br_if 0 (f64.div (local.get 0) (f64.const 0)) (local.get 1))
                  (drop)
                  (f64.neg (f64.mul (local.get 0) (f64.const 3))))))))"#,
    ),
    (
        "v128 float lanes, integer views and relaxed madd on NaN lanes",
        r#"(module
          (func (export "run") (param v128) (result v128)
            (i32x4.add
              (f32x4.relaxed_madd (local.get 0) (local.get 0) (f32x4.splat (f32.const 1)))
              (f64x2.add (local.get 0) (local.get 0)))))"#,
    ),
    (
        "relaxed nmadd and f64x2 madd on NaN lanes",
        r#"(module
          (func (export "run") (param v128) (result v128)
            (v128.xor
              (f32x4.relaxed_nmadd (local.get 0) (f32x4.splat (f32.const 2)) (local.get 0))
              (f64x2.relaxed_madd (local.get 0) (local.get 0) (local.get 0)))))"#,
    ),
    (
        "computed NaNs returned: at the function's end, by `return`, by a branch to the function",
        r#"(module
          (func (export "end") (param f64) (result f64) (f64.sub (local.get 0) (f64.const 1)))
          (func (export "return") (param f64) (result f64) (return (f64.mul (local.get 0) (f64.const 2))))
          (func (export "br") (param f64) (result f64) (br 0 (f64.div (local.get 0) (f64.const 3)))))"#,
    ),
    (
        "a global set from a computed NaN, and a NaN passed and returned",
        r#"(module (global (export "g") (mut f32) (f32.const 0))
          (func $twice (param f32) (result f32) (f32.add (local.get 0) (local.get 0)))
          (func (export "run") (param f32) (result f32)
            (global.set 0 (f32.demote_f64 (f64.promote_f32 (f32.neg (local.get 0)))))
            (call $twice (f32.nearest (local.get 0)))))"#,
    ),
];

fn case_module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

#[test]
fn hand_written_cases_give_the_eager_engines_bits() {
    for (what, wat) in CASES {
        if let Err(e) = compare(&case_module(wat), &Options::default()) {
            panic!("{what}: {e}");
        }
    }
}

/// An endless loop, an endless loop of calls, an endless recursion and an endless chain of
/// tail calls, as the fuel and stack rules see them. Each counts its innermost iterations at
/// address 0.
const ENDLESS_LOOP: &str = r#"(module (memory (export "m") 1)
  (func (export "run")
    (loop $l
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
      (br $l))))"#;
const ENDLESS_LOOP_OF_CALLS: &str = r#"(module (memory (export "m") 1)
  (func $work (local $i i32)
    (loop $l
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
      (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 100)))))
  (func (export "run")
    (loop $l (call $work) (br $l))))"#;
const ENDLESS_RECURSION: &str = r#"(module (memory (export "m") 1)
  (func $f (export "run")
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (call $f)))"#;
const ENDLESS_TAIL_CALLS: &str = r#"(module (memory (export "m") 1)
  (func $f (export "run")
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (return_call $f)))"#;

/// A trap's name, or the error that is not a trap.
fn trap_name(e: &wasmtime::Error) -> String {
    e.downcast_ref::<wasmtime::Trap>().map_or_else(|| format!("{e}"), |t| format!("{t:?}"))
}

/// How a call ended: `returned`, or [`trap_name`].
fn trap_of(result: wasmtime::Result<()>) -> String {
    result.map_or_else(|e| trap_name(&e), |()| "returned".to_string())
}

/// Runs `run` of the rewritten module with `fuel`; the trap, the counters and the memory.
fn run_counted(wat: &str, options: &Options, fuel: i64) -> (String, i64, i64, Vec<u8>) {
    let e = engines();
    let rewritten = instrument::instrument(&case_module(wat), options).unwrap();
    let module = Module::new(&e.guarded, &rewritten).unwrap();
    let mut store = Store::new(&e.guarded, ());
    store.set_fuel(100_000_000).unwrap();
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let fuel_g = instance.get_global(&mut store, FUEL_GLOBAL).unwrap();
    let stack_g = instance.get_global(&mut store, STACK_GLOBAL).unwrap();
    fuel_g.set(&mut store, Val::I64(fuel)).unwrap();
    stack_g.set(&mut store, Val::I64(5_000)).unwrap();
    let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
    let trap = trap_of(run.call(&mut store, ()));
    let memory = instance.get_memory(&mut store, "m").unwrap().data(&store)[..16].to_vec();
    let (f, s) = (fuel_g.get(&mut store).unwrap_i64(), stack_g.get(&mut store).unwrap_i64());
    (trap, f, s, memory)
}

/// What the fuel and stack checks must achieve; `Err` says what went wrong.
fn fuel_and_stack_rules(options: &Options) -> Result<(), String> {
    // Endless loops, with and without calls (which hand the counters over, and return to the
    // caller's stack level), and endless tail calls (which give their frame back) all end by
    // fuel, at the same point every run, after as many iterations as their cost says.
    for (what, wat) in [
        ("an endless loop", ENDLESS_LOOP),
        ("a loop of calls", ENDLESS_LOOP_OF_CALLS),
        ("tail calls", ENDLESS_TAIL_CALLS),
    ] {
        let a = run_counted(wat, options, 1_000_000);
        let b = run_counted(wat, options, 1_000_000);
        if a != b {
            return Err(format!("{what}: two runs stopped at different points: {a:?} / {b:?}"));
        }
        if a.0 != "UnreachableCodeReached" || a.1 >= 0 || a.2 < 0 {
            return Err(format!("{what} did not run out of fuel (trap, fuel, stack, memory): {a:?}"));
        }
        let iterations = u32::from_le_bytes(a.3[..4].try_into().unwrap_or_default());
        // An iteration costs 7 units (13 in the loop of calls, plus the calls).
        if !(1_000_000 / 14..=1_000_000 / 7).contains(&iterations) {
            return Err(format!("{what}: {iterations} iterations for 1 000 000 units of fuel"));
        }
    }
    let r = run_counted(ENDLESS_RECURSION, options, 1 << 40);
    if r.0 != "UnreachableCodeReached" || r.2 >= 0 {
        return Err(format!("an endless recursion did not stop at the wasm-level limit: {r:?}"));
    }
    let r2 = run_counted(ENDLESS_RECURSION, options, 1 << 40);
    if r != r2 {
        return Err(format!("two recursions stopped at different depths: {r:?} / {r2:?}"));
    }
    Ok(())
}

/// Raises the floor of the interrupt memory at `flag` (the address of its first byte, whose
/// store outlives the call), as the engine's watchdog does.
fn raise(flag: usize) {
    let flag = std::ptr::NonNull::new(flag as *mut u8).expect("a memory's address");
    assert!(interrupt::usable(flag, interrupt::SIZE as usize));
    // SAFETY: see above.
    unsafe { interrupt::raise(flag) };
}

/// What the interrupt check must achieve: a guest whose interrupt floor is raised stops at its
/// next check, loops, calls, tail calls and recursion alike, with its fuel counter written back
/// and not below zero (not `out_of_fuel`), whether the floor was raised before it ran or by
/// another thread while it runs (a recursion: before, as it reaches the native stack's end
/// first); a guest whose floor stays down runs out of fuel as before.
fn interrupt_rules(options: &Options) -> Result<(), String> {
    let options = Options { interrupt: true, ..options.clone() };
    let e = engines();
    for (what, wat) in [
        ("an endless loop", ENDLESS_LOOP),
        ("a loop of calls", ENDLESS_LOOP_OF_CALLS),
        ("tail calls", ENDLESS_TAIL_CALLS),
        ("a recursion", ENDLESS_RECURSION),
    ] {
        // A recursion reaches the native stack's end long before a thread could raise the floor.
        let ways: &[bool] = if wat == ENDLESS_RECURSION { &[false] } else { &[false, true] };
        for &raised_while_running in ways {
            let rewritten = instrument::instrument(&case_module(wat), &options).unwrap();
            let module = Module::new(&e.guarded, &rewritten).unwrap();
            let mut store = Store::new(&e.guarded, ());
            // The guard: about 0.15 s of this loop, when the check was left out.
            store.set_fuel(5_000_000_000).unwrap();
            let instance = Instance::new(&mut store, &module, &[]).unwrap();
            let fuel_g = instance.get_global(&mut store, FUEL_GLOBAL).unwrap();
            fuel_g.set(&mut store, Val::I64(1 << 40)).unwrap();
            instance.get_global(&mut store, STACK_GLOBAL).unwrap().set(&mut store, Val::I64(1 << 40)).unwrap();
            let flag = instance.get_memory(&mut store, INTERRUPT_MEMORY).ok_or("no interrupt memory")?;
            let flag = flag.data_ptr(&store) as usize;
            // Raised once the guest is under way (it counts its iterations in memory `m`).
            let counter = instance.get_memory(&mut store, "m").ok_or("no memory m")?.data_ptr(&store) as usize;
            let raiser = raised_while_running.then(|| {
                std::thread::spawn(move || {
                    let started = std::time::Instant::now();
                    // SAFETY: the guest's memory, alive until this thread is joined; read only.
                    while unsafe { std::ptr::read_volatile(counter as *const u32) } == 0
                        && started.elapsed() < std::time::Duration::from_secs(10)
                    {
                        std::thread::yield_now();
                    }
                    raise(flag);
                })
            });
            if !raised_while_running {
                raise(flag);
            }
            let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
            let trap = trap_of(run.call(&mut store, ()));
            if let Some(raiser) = raiser {
                raiser.join().unwrap();
            }
            let fuel = fuel_g.get(&mut store).unwrap_i64();
            if trap != "UnreachableCodeReached" || fuel < 0 || fuel == 1 << 40 && raised_while_running {
                return Err(format!(
                    "{what}, raised {}: not stopped by its raised floor (trap {trap}, fuel left {fuel})",
                    if raised_while_running { "while running" } else { "before" }
                ));
            }
        }
    }
    // The floor down: the check never fires by itself.
    let a = run_counted(ENDLESS_LOOP, &options, 1_000_000);
    if a.0 != "UnreachableCodeReached" || a.1 >= 0 {
        return Err(format!("with the interrupt check, an endless loop did not run out of fuel: {a:?}"));
    }
    Ok(())
}

#[test]
fn a_raised_interrupt_floor_stops_loops_calls_and_recursion() {
    interrupt_rules(&Options::default()).unwrap();
}

#[test]
fn fuel_runs_out_at_the_same_point_and_recursion_at_the_same_depth() {
    fuel_and_stack_rules(&Options::default()).unwrap();
}

/// Removing any kind of inserted check makes one of the tests above fail.
#[test]
fn every_weakened_check_is_caught() {
    let kinds = [
        Weaken::NanEscapes,
        Weaken::NanMerges,
        Weaken::NanReturns,
        Weaken::NanLocals,
        Weaken::V128,
        Weaken::FuelCheck,
        Weaken::FuelCharge,
        Weaken::FuelLoopRefund,
        Weaken::FuelSync,
        Weaken::StackCheck,
        Weaken::StackRestore,
        Weaken::StackTailCall,
        Weaken::InterruptCheck,
    ];
    for weaken in kinds {
        let options = Options { weaken, ..Options::default() };
        let caught_by_cases = CASES.iter().any(|(_, wat)| compare(&case_module(wat), &options).is_err());
        let caught_by_rules = fuel_and_stack_rules(&options).is_err() || interrupt_rules(&options).is_err();
        assert!(caught_by_cases || caught_by_rules, "leaving out {weaken:?} went unnoticed");
    }
}

#[test]
fn proposals_the_engine_does_not_enable_are_refused() {
    for (what, wat) in [
        ("multi-memory", r#"(module (memory 1) (memory 1))"#),
        ("memory64", r#"(module (memory i64 1))"#),
        ("threads", r#"(module (memory 1 1 shared))"#),
        ("exceptions", r#"(module (tag) (func (block (try_table (catch_all 0) (nop)))))"#),
    ] {
        let err = instrument::instrument(&case_module(wat), &Options::default()).expect_err(what);
        assert!(matches!(err, instrument::Error::Invalid(_)), "{what}: {err}");
    }
    let reserved = r#"(module (func (export "tidepool:fuel")))"#;
    assert!(instrument::instrument(&case_module(reserved), &Options::default()).is_err());
}
