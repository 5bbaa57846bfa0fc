//! Arguments, environment, clocks, randomness, `poll_oneoff` and the socket stubs.
//!
//! Clocks are virtual (see [`VirtualClock`](super::super::ctx::VirtualClock)): `realtime` starts
//! at a fixed instant and every clock advances with fuel consumed and time slept. `poll_oneoff`
//! never waits: a clock subscription advances the virtual clock to its deadline and fires.

use super::super::abi::{clockid, errno, event, layout};
use super::super::ctx::{FdKind, REALTIME_BASE_NS, WasiCtx};
use super::super::mem::{Errno, GuestMem};
use super::super::vfs::Fault;

type R = Result<(), Fault>;

/// `args_get` / `environ_get`: a table of pointers at `ptrs`, NUL-terminated strings at `buf`.
pub(super) fn strings_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, env: bool, ptrs: u32, buf: u32) -> R {
    let list = if env { &c.env } else { &c.args };
    let mut at = buf;
    let mut moved = 0u64;
    for (i, s) in list.iter().enumerate() {
        m.write_u32(ptrs.checked_add(4 * i as u32).ok_or(errno::FAULT)?, at)?;
        m.write(at, s.as_bytes())?;
        let end = at.checked_add(s.len() as u32).ok_or(errno::FAULT)?;
        m.write_u8(end, 0)?;
        at = end.checked_add(1).ok_or(errno::FAULT)?;
        moved += s.len() as u64 + 1;
    }
    c.moved += moved;
    Ok(())
}

/// `args_sizes_get` / `environ_sizes_get`.
pub(super) fn strings_sizes(c: &mut WasiCtx, m: &mut GuestMem<'_>, env: bool, count: u32, size: u32) -> R {
    let list = if env { &c.env } else { &c.args };
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    m.write_u32(count, list.len() as u32)?;
    m.write_u32(size, total as u32)?;
    Ok(())
}

fn clock_now(c: &WasiCtx, id: u32) -> Result<u64, Errno> {
    match id {
        clockid::REALTIME => Ok(c.clock.realtime_ns()),
        clockid::MONOTONIC | clockid::PROCESS_CPUTIME_ID | clockid::THREAD_CPUTIME_ID => Ok(c.clock.elapsed_ns()),
        _ => Err(errno::INVAL),
    }
}

pub(super) fn clock_res_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, id: u32, out: u32) -> R {
    clock_now(c, id)?;
    m.write_u64(out, 1)?;
    Ok(())
}

pub(super) fn clock_time_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, id: u32, out: u32) -> R {
    let now = clock_now(c, id)?;
    m.write_u64(out, now)?;
    Ok(())
}

pub(super) fn random_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, buf: u32, len: u32) -> R {
    c.random.fill(m.slice_mut(buf, len)?);
    c.moved += u64::from(len);
    Ok(())
}

/// One decoded subscription.
enum Sub {
    /// Fires when the monotonic virtual clock reaches `deadline`.
    Clock { deadline: u64 },
    /// A descriptor readiness check, answered at once.
    Fd { error: Errno, nbytes: u64, flags: u16 },
    /// An unknown clock: reported at once with `EINVAL`.
    BadClock,
}

/// Decodes the subscription at `at`; relative timeouts count from `now` (the virtual time when
/// the call began, so both passes agree on every deadline).
fn decode(c: &WasiCtx, m: &GuestMem<'_>, at: u32, now: u64) -> Result<(u64, u8, Sub), Errno> {
    let userdata = m.read_u64(at)?;
    let tag = m.read_u8(at + 8)?;
    let sub = match tag {
        event::CLOCK => {
            let id = m.read_u32(at + 16)?;
            let timeout = m.read_u64(at + 24)?;
            let flags = m.read_u16(at + 40)?;
            let absolute = flags & event::ABSTIME != 0;
            match id {
                clockid::REALTIME if absolute => Sub::Clock { deadline: timeout.saturating_sub(REALTIME_BASE_NS) },
                clockid::REALTIME | clockid::MONOTONIC | clockid::PROCESS_CPUTIME_ID | clockid::THREAD_CPUTIME_ID => {
                    Sub::Clock { deadline: if absolute { timeout } else { now.saturating_add(timeout) } }
                }
                _ => Sub::BadClock,
            }
        }
        event::FD_READ | event::FD_WRITE => {
            let fd = m.read_u32(at + 16)?;
            match c.fds.get(fd).map(|e| &e.kind) {
                Err(e) => Sub::Fd { error: e, nbytes: 0, flags: 0 },
                // Stdin is empty and at end of file.
                Ok(FdKind::Stdin) if tag == event::FD_READ => Sub::Fd { error: 0, nbytes: 0, flags: event::HANGUP },
                Ok(FdKind::File(of)) if tag == event::FD_READ => {
                    Sub::Fd { error: 0, nbytes: of.node.size().saturating_sub(of.pos), flags: 0 }
                }
                Ok(FdKind::Dir(_)) => Sub::Fd { error: errno::ISDIR, nbytes: 0, flags: 0 },
                Ok(_) => Sub::Fd { error: 0, nbytes: 0, flags: 0 },
            }
        }
        _ => return Err(errno::INVAL),
    };
    Ok((userdata, tag, sub))
}

fn write_event(
    m: &mut GuestMem<'_>,
    at: u32,
    userdata: u64,
    error: Errno,
    tag: u8,
    nbytes: u64,
    flags: u16,
) -> Result<(), Errno> {
    let mut b = [0u8; layout::EVENT_SIZE as usize];
    b[0..8].copy_from_slice(&userdata.to_le_bytes());
    b[8..10].copy_from_slice(&error.to_le_bytes());
    b[10] = tag;
    b[16..24].copy_from_slice(&nbytes.to_le_bytes());
    b[24..26].copy_from_slice(&flags.to_le_bytes());
    m.write(at, &b)
}

pub(super) fn poll_oneoff(c: &mut WasiCtx, m: &mut GuestMem<'_>, subs: u32, events: u32, n: u32, out: u32) -> R {
    if n == 0 {
        return Err(errno::INVAL.into());
    }
    let sub_at =
        |i: u32| i.checked_mul(layout::SUBSCRIPTION_SIZE).and_then(|o| subs.checked_add(o)).ok_or(errno::FAULT);
    let event_at = |i: u32| i.checked_mul(layout::EVENT_SIZE).and_then(|o| events.checked_add(o)).ok_or(errno::FAULT);
    let start = c.clock.elapsed_ns();
    // First pass: anything ready now (descriptors, bad clocks), and the earliest deadline.
    let mut ready = 0u32;
    let mut earliest = u64::MAX;
    for i in 0..n {
        match decode(c, m, sub_at(i)?, start)?.2 {
            Sub::Clock { deadline } => earliest = earliest.min(deadline),
            Sub::Fd { .. } | Sub::BadClock => ready += 1,
        }
    }
    let mut written = 0u32;
    if ready == 0 {
        // Nothing is ready: sleep (virtually) until the earliest deadline, then fire every
        // clock due by then.
        if earliest > start {
            c.clock.slept_ns = c.clock.slept_ns.saturating_add(earliest - start);
        }
        let now = c.clock.elapsed_ns();
        for i in 0..n {
            if let (userdata, tag, Sub::Clock { deadline }) = decode(c, m, sub_at(i)?, start)?
                && deadline <= now
            {
                write_event(m, event_at(written)?, userdata, 0, tag, 0, 0)?;
                written += 1;
            }
        }
    } else {
        for i in 0..n {
            match decode(c, m, sub_at(i)?, start)? {
                (userdata, tag, Sub::Fd { error, nbytes, flags }) => {
                    write_event(m, event_at(written)?, userdata, error, tag, nbytes, flags)?;
                    written += 1;
                }
                (userdata, tag, Sub::BadClock) => {
                    write_event(m, event_at(written)?, userdata, errno::INVAL, tag, 0, 0)?;
                    written += 1;
                }
                (_, _, Sub::Clock { .. }) => {}
            }
        }
    }
    c.moved += u64::from(n) * u64::from(layout::SUBSCRIPTION_SIZE) + u64::from(written) * u64::from(layout::EVENT_SIZE);
    m.write_u32(out, written)?;
    Ok(())
}

/// The answer of every `sock_*` call: `ENOTSOCK` for an open descriptor, `EBADF` otherwise.
pub(super) fn not_a_socket(c: &mut WasiCtx, fd: u32) -> R {
    c.fds.get(fd)?;
    Err(errno::NOTSOCK.into())
}
