//! The guest in its store: instantiating it with its counters set, and reading how it stopped
//! (the outcome) and how much fuel it used.

use wasmtime::{Store, Trap};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::engine::{Compiled, EngineState, Interrupt, Watch};
use crate::error::{Error, Result};
use crate::instrument::{
    START_EXPORT,
    fuel::FUEL_GLOBAL,
    interrupt::{self, INTERRUPT_MEMORY},
    stack::{STACK_GLOBAL, STACK_TRAP_MESSAGE},
};
use crate::limits::Limits;
use crate::receipt::Outcome;
use crate::wasi::ctx::WasiCtx;
use crate::wasi::{GuestStop, Limiter, Meter, StoreState};

/// A store for one job: the WASI state, the memory limiter, and the fuel.
pub(super) fn new_store(engine: &EngineState, wasi: WasiCtx, limits: &Limits) -> Result<Store<StoreState>> {
    let meter = match (engine.fuel_metering(), engine.instrumented()) {
        (false, _) => Meter::Off,
        (true, false) => Meter::Wasmtime,
        // Set once the instance exists (see `start`).
        (true, true) => Meter::Off,
    };
    let state =
        StoreState { wasi, limiter: Limiter::new(limits.memory_bytes), memory: None, fuel_limit: limits.fuel, meter };
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|s| &mut s.limiter);
    if matches!(meter, Meter::Wasmtime) {
        store.set_fuel(limits.fuel).map_err(Error::engine)?;
    }
    Ok(store)
}

/// The counters of an instrumented module, read when the guest stopped.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub(super) fuel: Option<wasmtime::Global>,
    pub(super) stack: Option<wasmtime::Global>,
}

impl Counters {
    pub(super) fn read(g: Option<wasmtime::Global>, store: &mut Store<StoreState>) -> Option<i64> {
        g.and_then(|g| g.get(&mut *store).i64())
    }
}

/// When and why a running guest is stopped from outside: its deadline, and the flag that asks
/// it to stop.
pub(super) struct StopWhen {
    pub deadline: Instant,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Instantiates the module and runs `_start` (after the counters are set and the start
/// function has run, for an instrumented module). With `stop` and the interrupt check, the
/// guest is watched from its instantiation on, and `watch` holds the watch: end it before the
/// store goes.
pub(super) fn start(
    engine: &EngineState,
    compiled: &Compiled,
    store: &mut Store<StoreState>,
    limits: &Limits,
    counters: &mut Counters,
    stop: Option<StopWhen>,
    watch: &mut Option<Watch>,
) -> wasmtime::Result<()> {
    let instance = compiled.pre.instantiate(&mut *store)?;
    store.data_mut().memory = instance.get_memory(&mut *store, "memory");
    if let Some(stop) = stop
        && let Some(memory) = instance.get_memory(&mut *store, INTERRUPT_MEMORY)
    {
        let flag = std::ptr::NonNull::new(memory.data_ptr(&*store))
            .filter(|&p| interrupt::usable(p, memory.data_size(&*store)))
            .ok_or_else(|| wasmtime::format_err!("the interrupt memory is not aligned for its floor"))?;
        // SAFETY: the interrupt memory never grows, so it stays where it is while the store
        // lives; the caller drops the watch before the store.
        *watch = Some(unsafe { engine.watchdog.watch(flag, stop.deadline, stop.cancel) });
    }
    if engine.instrumented() {
        let clamp = |n: u64| wasmtime::Val::I64(i64::try_from(n).unwrap_or(i64::MAX));
        counters.fuel = instance.get_global(&mut *store, FUEL_GLOBAL);
        counters.stack = instance.get_global(&mut *store, STACK_GLOBAL);
        if let Some(g) = counters.fuel {
            g.set(&mut *store, clamp(limits.fuel))?;
            if engine.fuel_metering() {
                store.data_mut().meter = Meter::Module(g);
            }
        }
        if let Some(g) = counters.stack {
            g.set(&mut *store, clamp(limits.max_stack_height))?;
        }
        if let Some(f) = instance.get_func(&mut *store, START_EXPORT) {
            f.typed::<(), ()>(&*store)?.call(&mut *store, ())?;
        }
    }
    instance.get_typed_func::<(), ()>(&mut *store, "_start")?.call(&mut *store, ())
}

/// What the counters said when the guest stopped: fuel left and stack units left.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Left {
    pub(super) fuel: Option<i64>,
    pub(super) stack: Option<i64>,
}

/// How the guest ended. `interrupted`: why it was stopped from outside, if it was (the trap it
/// then hits is the interrupt check's).
pub(super) fn classify(
    result: wasmtime::Result<()>,
    memory_denied: bool,
    left: Left,
    interrupted: Option<Interrupt>,
) -> Result<Outcome> {
    let out_of_fuel = left.fuel.is_some_and(|f| f < 0);
    let Err(e) = result else {
        return Ok(if out_of_fuel { Outcome::OutOfFuel } else { Outcome::Exited { code: 0 } });
    };
    if let Some(stop) = e.downcast_ref::<GuestStop>() {
        return match stop {
            GuestStop::Cancelled => Ok(Outcome::Stopped),
            // A module counter below zero, however the guest stopped: it ran out of fuel.
            _ if out_of_fuel => Ok(Outcome::OutOfFuel),
            // Refused memory, then failed: a guest that handles the refusal (Python raises
            // `MemoryError`, C code checks `malloc`) and exits non-zero hit the memory limit
            // as surely as one that traps.
            GuestStop::Exit(code) if *code != 0 && memory_denied => Ok(Outcome::MemoryLimit),
            GuestStop::Exit(code) => Ok(Outcome::Exited { code: *code }),
            GuestStop::OutputQuota(_) => Ok(Outcome::OutputQuota),
            GuestStop::HostFailure(reason) => Err(Error::Engine { reason: reason.clone() }),
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return Ok(match trap {
            Trap::Interrupt => Outcome::Timeout,
            Trap::OutOfFuel => Outcome::OutOfFuel,
            _ if out_of_fuel => Outcome::OutOfFuel,
            Trap::UnreachableCodeReached if interrupted == Some(Interrupt::Timeout) => Outcome::Timeout,
            Trap::UnreachableCodeReached if interrupted == Some(Interrupt::Stopped) => Outcome::Stopped,
            _ if left.stack.is_some_and(|s| s < 0) => Outcome::Trap { message: STACK_TRAP_MESSAGE.to_string() },
            _ if memory_denied => Outcome::MemoryLimit,
            other => Outcome::Trap { message: other.to_string() },
        });
    }
    if memory_denied {
        // The initial memory did not fit the limit: instantiation was refused.
        return Ok(Outcome::MemoryLimit);
    }
    Err(Error::Engine { reason: format!("{e:#}") })
}

/// Fuel used: what the meter says is gone, at most the limit.
pub(super) fn fuel_used(meter: Meter, limit: u64, store: &mut Store<StoreState>, left: Left) -> u64 {
    match meter {
        Meter::Off => 0,
        Meter::Wasmtime => limit - store.get_fuel().unwrap_or(0).min(limit),
        Meter::Module(_) => match left.fuel {
            Some(n) if n >= 0 => limit.saturating_sub(n as u64),
            _ => limit,
        },
    }
}
