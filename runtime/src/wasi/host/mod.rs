//! The `wasi_snapshot_preview1` import surface, implemented over [`WasiCtx`](super::ctx::WasiCtx).
//!
//! Each import is a thin closure registered with the [`Linker`]: it borrows the guest's memory
//! and the job state together, calls the implementation in one of the submodules, and turns the
//! result into an errno, or into a trap that ends the job ([`GuestStop`]).
//!
//! # Pricing host calls in fuel
//!
//! Host calls run outside the guest's instruction stream, so no fuel is counted for them.
//! Unpriced, a guest could do unbounded I/O within a fuel budget, and the fuel figure in a
//! receipt would say nothing about it. Every call therefore costs [`HOST_CALL_FUEL`], plus
//! [`FUEL_PER_BYTE`] for each byte it moves between the guest and the outside (file contents,
//! stdio, random bytes, names and paths), the same price wasmtime's default cost table puts on a
//! byte of `memory.copy`. The charge is deterministic: it depends only on what the guest asked
//! for and what the virtual filesystem held. It comes off the same counter as the guest's own
//! instructions: wasmtime's fuel (legacy engine) or the module's counter (v2 engine, see
//! [`crate::instrument::fuel`]).

mod fd;
mod misc;
mod path;

use wasmtime::{Caller, Linker, Memory, Trap};

use super::mem::GuestMem;
use super::vfs::Fault;
use super::{GuestStop, Meter, StoreState};

/// The only import module a guest may use.
pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

/// Fuel charged for every host call, on top of the bytes it moves.
pub const HOST_CALL_FUEL: u64 = 100;
/// Fuel charged per byte a host call moves.
pub const FUEL_PER_BYTE: u64 = 1;

/// Runs one host call: borrows memory and state, runs `f`, charges fuel, maps the outcome.
fn dispatch(
    caller: &mut Caller<'_, StoreState>,
    f: impl FnOnce(&mut super::ctx::WasiCtx, &mut GuestMem<'_>) -> Result<(), Fault>,
) -> wasmtime::Result<i32> {
    let meter = caller.data().meter;
    // A module counter already below zero: the guest ran out before this call, which must not
    // happen (nothing of it is done).
    let fuel_left = meter.left(&mut *caller).map_err(|_| wasmtime::Error::from(Trap::OutOfFuel))?;
    let memory = guest_memory(caller)?;
    let (bytes, state) = memory.data_and_store_mut(&mut *caller);
    if let Some(left) = fuel_left {
        state.wasi.clock.fuel_used = state.fuel_limit.saturating_sub(left);
    }
    let mut mem = GuestMem::new(bytes);
    let result = f(&mut state.wasi, &mut mem);
    let moved = std::mem::take(&mut state.wasi.moved);
    charge(caller, meter, fuel_left, moved)?;
    match result {
        Ok(()) => Ok(0),
        Err(Fault::Errno(e)) => Ok(i32::from(e)),
        Err(Fault::Quota(q)) => Err(wasmtime::Error::new(GuestStop::OutputQuota(q))),
        Err(Fault::Host(what, e)) => Err(wasmtime::Error::new(GuestStop::HostFailure(format!("{what}: {e}")))),
    }
}

/// The guest's exported memory (cached after instantiation; looked up during start functions).
fn guest_memory(caller: &mut Caller<'_, StoreState>) -> wasmtime::Result<Memory> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    match caller.get_export("memory") {
        Some(wasmtime::Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::new(GuestStop::HostFailure("the module exports no `memory`".into()))),
    }
}

/// Takes the call's price from the counter the guest's own instructions use (wasmtime's, or the
/// module's for the v2 engine); out of fuel when it does not cover it.
fn charge(
    caller: &mut Caller<'_, StoreState>,
    meter: Meter,
    fuel_left: Option<u64>,
    moved: u64,
) -> wasmtime::Result<()> {
    let Some(left) = fuel_left else { return Ok(()) };
    let cost = HOST_CALL_FUEL.saturating_add(moved.saturating_mul(FUEL_PER_BYTE));
    if cost > left {
        meter.set(&mut *caller, None)?;
        return Err(Trap::OutOfFuel.into());
    }
    meter.set(&mut *caller, Some(left - cost))
}

/// Registers one host function that returns an errno. Arguments are the wasm-level `i32`/`i64`
/// values; the body sees them under the same names.
macro_rules! wasi {
    ($linker:ident, $name:literal, |$ctx:ident, $mem:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        $linker.func_wrap(
            MODULE,
            $name,
            |mut caller: Caller<'_, StoreState>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                dispatch(&mut caller, |$ctx, $mem| $body)
            },
        )?;
    };
}

/// Every import name this host provides. A module importing anything else is refused before
/// it runs.
pub(crate) const IMPORTS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Adds every `wasi_snapshot_preview1` function to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    // Arguments, environment, clocks, randomness, scheduling, process.
    wasi!(linker, "args_get", |c, m, argv: i32, buf: i32| misc::strings_get(c, m, false, argv as u32, buf as u32));
    wasi!(linker, "args_sizes_get", |c, m, count: i32, size: i32| misc::strings_sizes(
        c,
        m,
        false,
        count as u32,
        size as u32
    ));
    wasi!(linker, "environ_get", |c, m, env: i32, buf: i32| misc::strings_get(c, m, true, env as u32, buf as u32));
    wasi!(linker, "environ_sizes_get", |c, m, count: i32, size: i32| misc::strings_sizes(
        c,
        m,
        true,
        count as u32,
        size as u32
    ));
    wasi!(linker, "clock_res_get", |c, m, id: i32, out: i32| misc::clock_res_get(c, m, id as u32, out as u32));
    wasi!(linker, "clock_time_get", |c, m, id: i32, _precision: i64, out: i32| misc::clock_time_get(
        c, m, id as u32, out as u32
    ));
    wasi!(linker, "random_get", |c, m, buf: i32, len: i32| misc::random_get(c, m, buf as u32, len as u32));
    wasi!(linker, "poll_oneoff", |c, m, subs: i32, events: i32, n: i32, out: i32| misc::poll_oneoff(
        c,
        m,
        subs as u32,
        events as u32,
        n as u32,
        out as u32
    ));
    wasi!(linker, "sched_yield", |_c, _m| Ok(()));
    wasi!(linker, "proc_raise", |_c, _m, _sig: i32| Err(Fault::Errno(super::abi::errno::NOTSUP)));
    linker.func_wrap(MODULE, "proc_exit", |_: Caller<'_, StoreState>, code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(GuestStop::Exit(code)))
    })?;

    // Descriptors.
    wasi!(linker, "fd_advise", |c, _m, fd: i32, _off: i64, _len: i64, advice: i32| fd::advise(
        c,
        fd as u32,
        advice as u32
    ));
    wasi!(linker, "fd_allocate", |c, _m, fd: i32, off: i64, len: i64| fd::allocate(
        c, fd as u32, off as u64, len as u64
    ));
    wasi!(linker, "fd_close", |c, _m, fd: i32| fd::close(c, fd as u32));
    wasi!(linker, "fd_datasync", |c, _m, fd: i32| fd::sync(c, fd as u32, super::abi::rights::FD_DATASYNC));
    wasi!(linker, "fd_sync", |c, _m, fd: i32| fd::sync(c, fd as u32, super::abi::rights::FD_SYNC));
    wasi!(linker, "fd_fdstat_get", |c, m, fd: i32, out: i32| fd::fdstat_get(c, m, fd as u32, out as u32));
    wasi!(linker, "fd_fdstat_set_flags", |c, _m, fd: i32, flags: i32| fd::fdstat_set_flags(c, fd as u32, flags as u32));
    wasi!(linker, "fd_fdstat_set_rights", |c, _m, fd: i32, base: i64, inh: i64| fd::fdstat_set_rights(
        c,
        fd as u32,
        base as u64,
        inh as u64
    ));
    wasi!(linker, "fd_filestat_get", |c, m, fd: i32, out: i32| fd::filestat_get(c, m, fd as u32, out as u32));
    wasi!(linker, "fd_filestat_set_size", |c, _m, fd: i32, size: i64| fd::filestat_set_size(c, fd as u32, size as u64));
    wasi!(linker, "fd_filestat_set_times", |c, _m, fd: i32, atim: i64, mtim: i64, flags: i32| fd::filestat_set_times(
        c,
        fd as u32,
        atim as u64,
        mtim as u64,
        flags as u32
    ));
    wasi!(linker, "fd_pread", |c, m, fd: i32, iovs: i32, n: i32, off: i64, out: i32| fd::read(
        c,
        m,
        fd as u32,
        iovs as u32,
        n as u32,
        Some(off as u64),
        out as u32
    ));
    wasi!(linker, "fd_read", |c, m, fd: i32, iovs: i32, n: i32, out: i32| fd::read(
        c,
        m,
        fd as u32,
        iovs as u32,
        n as u32,
        None,
        out as u32
    ));
    wasi!(linker, "fd_pwrite", |c, m, fd: i32, iovs: i32, n: i32, off: i64, out: i32| fd::write(
        c,
        m,
        fd as u32,
        iovs as u32,
        n as u32,
        Some(off as u64),
        out as u32
    ));
    wasi!(linker, "fd_write", |c, m, fd: i32, iovs: i32, n: i32, out: i32| fd::write(
        c,
        m,
        fd as u32,
        iovs as u32,
        n as u32,
        None,
        out as u32
    ));
    wasi!(linker, "fd_prestat_get", |c, m, fd: i32, out: i32| fd::prestat_get(c, m, fd as u32, out as u32));
    wasi!(linker, "fd_prestat_dir_name", |c, m, fd: i32, buf: i32, len: i32| fd::prestat_dir_name(
        c, m, fd as u32, buf as u32, len as u32
    ));
    wasi!(linker, "fd_readdir", |c, m, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| fd::readdir(
        c,
        m,
        fd as u32,
        buf as u32,
        len as u32,
        cookie as u64,
        out as u32
    ));
    wasi!(linker, "fd_renumber", |c, _m, from: i32, to: i32| c
        .fds
        .renumber(from as u32, to as u32)
        .map_err(Fault::Errno));
    wasi!(linker, "fd_seek", |c, m, fd: i32, off: i64, whence: i32, out: i32| fd::seek(
        c,
        m,
        fd as u32,
        off,
        whence as u32,
        out as u32
    ));
    wasi!(linker, "fd_tell", |c, m, fd: i32, out: i32| fd::tell(c, m, fd as u32, out as u32));

    // Paths.
    wasi!(linker, "path_create_directory", |c, m, fd: i32, p: i32, pl: i32| path::create_directory(
        c, m, fd as u32, p as u32, pl as u32
    ));
    wasi!(linker, "path_filestat_get", |c, m, fd: i32, flags: i32, p: i32, pl: i32, out: i32| path::filestat_get(
        c,
        m,
        fd as u32,
        flags as u32,
        p as u32,
        pl as u32,
        out as u32
    ));
    wasi!(linker, "path_filestat_set_times", |c,
                                              m,
                                              fd: i32,
                                              flags: i32,
                                              p: i32,
                                              pl: i32,
                                              atim: i64,
                                              mtim: i64,
                                              fst: i32| {
        path::filestat_set_times(
            c,
            m,
            fd as u32,
            flags as u32,
            p as u32,
            pl as u32,
            (atim as u64, mtim as u64, fst as u32),
        )
    });
    wasi!(linker, "path_link", |c, m, ofd: i32, oflags: i32, op: i32, opl: i32, nfd: i32, np: i32, npl: i32| {
        path::link(c, m, (ofd as u32, oflags as u32, op as u32, opl as u32), (nfd as u32, np as u32, npl as u32))
    });
    wasi!(linker, "path_open", |c,
                                m,
                                fd: i32,
                                dirflags: i32,
                                p: i32,
                                pl: i32,
                                oflags: i32,
                                base: i64,
                                inh: i64,
                                fdflags: i32,
                                out: i32| {
        path::open(
            c,
            m,
            fd as u32,
            dirflags as u32,
            (p as u32, pl as u32),
            oflags as u32,
            (base as u64, inh as u64),
            fdflags as u32,
            out as u32,
        )
    });
    wasi!(linker, "path_readlink", |c, m, fd: i32, p: i32, pl: i32, buf: i32, len: i32, out: i32| path::readlink(
        c,
        m,
        fd as u32,
        (p as u32, pl as u32),
        (buf as u32, len as u32),
        out as u32
    ));
    wasi!(linker, "path_remove_directory", |c, m, fd: i32, p: i32, pl: i32| path::remove_directory(
        c, m, fd as u32, p as u32, pl as u32
    ));
    wasi!(linker, "path_rename", |c, m, ofd: i32, op: i32, opl: i32, nfd: i32, np: i32, npl: i32| path::rename(
        c,
        m,
        (ofd as u32, op as u32, opl as u32),
        (nfd as u32, np as u32, npl as u32)
    ));
    wasi!(linker, "path_symlink", |c, m, op: i32, opl: i32, fd: i32, np: i32, npl: i32| path::symlink(
        c,
        m,
        (op as u32, opl as u32),
        (fd as u32, np as u32, npl as u32)
    ));
    wasi!(linker, "path_unlink_file", |c, m, fd: i32, p: i32, pl: i32| path::unlink_file(
        c, m, fd as u32, p as u32, pl as u32
    ));

    // Sockets: no socket descriptor ever exists, so every call fails as POSIX would on a
    // non-socket descriptor. There is no way to open one: no network.
    wasi!(linker, "sock_accept", |c, _m, fd: i32, _flags: i32, _out: i32| misc::not_a_socket(c, fd as u32));
    wasi!(linker, "sock_recv", |c, _m, fd: i32, _d: i32, _dl: i32, _f: i32, _o1: i32, _o2: i32| misc::not_a_socket(
        c, fd as u32
    ));
    wasi!(linker, "sock_send", |c, _m, fd: i32, _d: i32, _dl: i32, _f: i32, _o: i32| misc::not_a_socket(c, fd as u32));
    wasi!(linker, "sock_shutdown", |c, _m, fd: i32, _how: i32| misc::not_a_socket(c, fd as u32));
    Ok(())
}
