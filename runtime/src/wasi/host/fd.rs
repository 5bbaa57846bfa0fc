//! `fd_*` functions: reading, writing, seeking, stat and directory listing on descriptors.
//!
//! Read and write access follow the descriptor's rights (`FD_READ`, `FD_WRITE`), which
//! `path_open` derives from what the guest asked for: a missing access right is `EBADF`, as
//! POSIX reports for a descriptor opened without that access mode; any other missing right is
//! `ENOTCAPABLE`. Content operations on a directory are `EISDIR`, on stdio `ESPIPE`.

use super::super::abi::{advice_is_valid, errno, fdflags, fstflags, layout, rights, whence};
use super::super::ctx::{Fd, FdKind, WasiCtx};
use super::super::mem::{Errno, GuestMem};
use super::super::vfs::{Fault, Node, Stat};

type R = Result<(), Fault>;

fn require_access(fd: &Fd, right: u64) -> Result<(), Errno> {
    if fd.base & right == right { Ok(()) } else { Err(errno::BADF) }
}

/// Lays `stat` out as a `filestat` at `ptr`.
pub(super) fn write_filestat(m: &mut GuestMem<'_>, ptr: u32, s: &Stat) -> Result<(), Errno> {
    let mut b = [0u8; layout::FILESTAT_SIZE as usize];
    b[0..8].copy_from_slice(&s.dev.to_le_bytes());
    b[8..16].copy_from_slice(&s.ino.to_le_bytes());
    b[16] = s.filetype;
    b[24..32].copy_from_slice(&s.nlink.to_le_bytes());
    b[32..40].copy_from_slice(&s.size.to_le_bytes());
    b[40..48].copy_from_slice(&s.times.atim.to_le_bytes());
    b[48..56].copy_from_slice(&s.times.mtim.to_le_bytes());
    b[56..64].copy_from_slice(&s.times.ctim.to_le_bytes());
    m.write(ptr, &b)
}

/// Interprets `fstflags`: which times to set, to what. `*_NOW` means the virtual clock.
pub(super) fn times_to_set(atim: u64, mtim: u64, flags: u32, now: u64) -> Result<(Option<u64>, Option<u64>), Errno> {
    let flags = u16::try_from(flags).map_err(|_| errno::INVAL)?;
    let known = fstflags::ATIM | fstflags::ATIM_NOW | fstflags::MTIM | fstflags::MTIM_NOW;
    if flags & !known != 0 {
        return Err(errno::INVAL);
    }
    let pick = |set: u16, set_now: u16, value: u64| match (flags & set != 0, flags & set_now != 0) {
        (true, true) => Err(errno::INVAL),
        (true, false) => Ok(Some(value)),
        (false, true) => Ok(Some(now)),
        (false, false) => Ok(None),
    };
    Ok((pick(fstflags::ATIM, fstflags::ATIM_NOW, atim)?, pick(fstflags::MTIM, fstflags::MTIM_NOW, mtim)?))
}

pub(super) fn advise(c: &mut WasiCtx, fd: u32, advice: u32) -> R {
    let e = c.fds.get(fd)?;
    match e.kind {
        FdKind::File(_) => {}
        FdKind::Dir(_) => return Err(errno::ISDIR.into()),
        _ => return Err(errno::SPIPE.into()),
    }
    e.require(rights::FD_ADVISE)?;
    if !advice_is_valid(advice) {
        return Err(errno::INVAL.into());
    }
    Ok(())
}

pub(super) fn allocate(c: &mut WasiCtx, fd: u32, offset: u64, len: u64) -> R {
    let e = c.fds.get(fd)?;
    let FdKind::File(of) = &e.kind else {
        return Err(if matches!(e.kind, FdKind::Dir(_)) { errno::ISDIR } else { errno::SPIPE }.into());
    };
    e.require(rights::FD_ALLOCATE)?;
    if len == 0 {
        return Err(errno::INVAL.into());
    }
    let end = offset.checked_add(len).filter(|&e| e <= i64::MAX as u64).ok_or(errno::FBIG)?;
    if end > of.node.size() {
        c.vfs.reserve_growth(&of.node, end)?;
        of.node.set_size(end)?;
    }
    Ok(())
}

pub(super) fn close(c: &mut WasiCtx, fd: u32) -> R {
    c.fds.remove(fd)?;
    Ok(())
}

pub(super) fn sync(c: &mut WasiCtx, fd: u32, right: u64) -> R {
    let e = c.fds.get(fd)?;
    if matches!(e.kind, FdKind::Stdin | FdKind::Stdout | FdKind::Stderr) {
        return Err(errno::INVAL.into());
    }
    // Nothing to do: outputs become durable when the job's outputs are materialized.
    e.require(right).map_err(Fault::Errno)
}

pub(super) fn fdstat_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, out: u32) -> R {
    let e = c.fds.get(fd)?;
    let mut b = [0u8; layout::FDSTAT_SIZE as usize];
    b[0] = e.filetype();
    b[2..4].copy_from_slice(&e.flags.to_le_bytes());
    b[8..16].copy_from_slice(&e.base.to_le_bytes());
    b[16..24].copy_from_slice(&e.inheriting.to_le_bytes());
    m.write(out, &b)?;
    Ok(())
}

pub(super) fn fdstat_set_flags(c: &mut WasiCtx, fd: u32, flags: u32) -> R {
    let e = c.fds.get_mut(fd)?;
    e.require(rights::FD_FDSTAT_SET_FLAGS)?;
    let flags = u16::try_from(flags).ok().filter(|f| f & !fdflags::ALL == 0).ok_or(errno::INVAL)?;
    e.flags = flags;
    Ok(())
}

pub(super) fn fdstat_set_rights(c: &mut WasiCtx, fd: u32, base: u64, inheriting: u64) -> R {
    let e = c.fds.get_mut(fd)?;
    // Rights can be dropped, never gained.
    if base & !e.base != 0 || inheriting & !e.inheriting != 0 {
        return Err(errno::NOTCAPABLE.into());
    }
    e.base = base;
    e.inheriting = inheriting;
    Ok(())
}

/// The `filestat` of whatever a descriptor refers to. Stdio reports all zeros.
fn fd_stat(e: &Fd) -> Stat {
    match &e.kind {
        FdKind::Dir(d) => Node::Dir(d.clone()).stat(),
        FdKind::File(of) => Node::File(of.node.clone()).stat(),
        FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Stat {
            dev: 0,
            ino: 0,
            filetype: e.filetype(),
            nlink: 1,
            size: 0,
            times: super::super::vfs::Times { atim: 0, mtim: 0, ctim: 0 },
        },
    }
}

pub(super) fn filestat_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, out: u32) -> R {
    let e = c.fds.get(fd)?;
    e.require(rights::FD_FILESTAT_GET)?;
    write_filestat(m, out, &fd_stat(e))?;
    Ok(())
}

pub(super) fn filestat_set_size(c: &mut WasiCtx, fd: u32, size: u64) -> R {
    let e = c.fds.get(fd)?;
    let FdKind::File(of) = &e.kind else {
        return Err(if matches!(e.kind, FdKind::Dir(_)) { errno::ISDIR } else { errno::INVAL }.into());
    };
    e.require(rights::FD_FILESTAT_SET_SIZE)?;
    if size > i64::MAX as u64 {
        return Err(errno::FBIG.into());
    }
    c.vfs.reserve_growth(&of.node, size)?;
    of.node.set_size(size)
}

pub(super) fn filestat_set_times(c: &mut WasiCtx, fd: u32, atim: u64, mtim: u64, flags: u32) -> R {
    let e = c.fds.get(fd)?;
    e.require(rights::FD_FILESTAT_SET_TIMES)?;
    let (a, m) = times_to_set(atim, mtim, flags, c.clock.realtime_ns())?;
    match &e.kind {
        FdKind::Dir(d) => Node::Dir(d.clone()).set_times(a, m),
        FdKind::File(of) => Node::File(of.node.clone()).set_times(a, m),
        _ => return Err(errno::INVAL.into()),
    }
    Ok(())
}

/// `fd_read` (`offset` is `None`) and `fd_pread`.
pub(super) fn read(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    fd: u32,
    iovs: u32,
    n: u32,
    offset: Option<u64>,
    out: u32,
) -> R {
    let e = c.fds.get_mut(fd)?;
    require_access(e, rights::FD_READ)?;
    let total = match &mut e.kind {
        // Stdin is empty: every read is at end of file.
        FdKind::Stdin if offset.is_none() => 0,
        FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => return Err(errno::SPIPE.into()),
        FdKind::Dir(_) => return Err(errno::ISDIR.into()),
        FdKind::File(of) => {
            if offset.is_some() && e.base & rights::FD_SEEK == 0 {
                return Err(errno::NOTCAPABLE.into());
            }
            let mut pos = offset.unwrap_or(of.pos);
            let mut total = 0u64;
            for i in 0..n {
                let (buf, len) = m.iovec(iovs, i)?;
                let got = of.node.read_at(m.slice_mut(buf, len)?, pos)?;
                pos += got as u64;
                total += got as u64;
                if got < len as usize {
                    break;
                }
            }
            if offset.is_none() {
                of.pos = pos;
            }
            total
        }
    };
    c.moved += total;
    m.write_u32(out, u32::try_from(total).map_err(|_| errno::OVERFLOW)?)?;
    Ok(())
}

/// `fd_write` (`offset` is `None`) and `fd_pwrite`.
pub(super) fn write(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    fd: u32,
    iovs: u32,
    n: u32,
    offset: Option<u64>,
    out: u32,
) -> R {
    // Validate every iovec and size the write before anything is written.
    let mut len = 0u64;
    for i in 0..n {
        len += u64::from(m.iovec(iovs, i)?.1);
    }
    let e = c.fds.get_mut(fd)?;
    require_access(e, rights::FD_WRITE)?;
    let append = e.flags & fdflags::APPEND != 0;
    let stream = match &mut e.kind {
        FdKind::Stdout if offset.is_none() => Some(&mut c.stdout),
        FdKind::Stderr if offset.is_none() => Some(&mut c.stderr),
        FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => return Err(errno::SPIPE.into()),
        FdKind::Dir(_) => return Err(errno::ISDIR.into()),
        FdKind::File(of) => {
            if offset.is_some() && e.base & rights::FD_SEEK == 0 {
                return Err(errno::NOTCAPABLE.into());
            }
            let mut pos = match offset {
                Some(off) => off,
                None if append => of.node.size(),
                None => of.pos,
            };
            let end = pos.checked_add(len).filter(|&e| e <= i64::MAX as u64).ok_or(errno::FBIG)?;
            // The whole write is charged against the quota first: a write that would cross
            // it stops the job and writes nothing.
            c.vfs.reserve_growth(&of.node, end)?;
            for i in 0..n {
                let (buf, l) = m.iovec(iovs, i)?;
                of.node.write_at(m.slice(buf, l)?, pos)?;
                pos += u64::from(l);
            }
            if offset.is_none() {
                of.pos = pos;
            }
            None
        }
    };
    if let Some(stream) = stream {
        for i in 0..n {
            let (buf, l) = m.iovec(iovs, i)?;
            stream.write(m.slice(buf, l)?);
        }
    }
    c.moved += len;
    m.write_u32(out, u32::try_from(len).map_err(|_| errno::OVERFLOW)?)?;
    Ok(())
}

pub(super) fn prestat_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, out: u32) -> R {
    let name = c.fds.get(fd)?.preopen.as_ref().ok_or(errno::BADF)?;
    let mut b = [0u8; layout::PRESTAT_SIZE as usize];
    b[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
    m.write(out, &b)?;
    Ok(())
}

pub(super) fn prestat_dir_name(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, buf: u32, len: u32) -> R {
    let name = c.fds.get(fd)?.preopen.as_ref().ok_or(errno::BADF)?;
    if (len as usize) < name.len() {
        return Err(errno::NAMETOOLONG.into());
    }
    m.write(buf, name.as_bytes())?;
    c.moved += name.len() as u64;
    Ok(())
}

pub(super) fn readdir(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, buf: u32, len: u32, cookie: u64, out: u32) -> R {
    let e = c.fds.get(fd)?;
    let FdKind::Dir(dir) = &e.kind else { return Err(errno::NOTDIR.into()) };
    e.require(rights::FD_READDIR)?;
    // Validate the whole buffer up front, so the loop below cannot fault half-way.
    m.slice(buf, len)?;
    let mut used = 0u32;
    let mut next = cookie;
    let mut fault = None;
    dir.visit(cookie, |name, ino, ty| {
        next += 1;
        let mut header = [0u8; layout::DIRENT_SIZE as usize];
        header[0..8].copy_from_slice(&next.to_le_bytes());
        header[8..16].copy_from_slice(&ino.to_le_bytes());
        header[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        header[20] = ty;
        for part in [&header[..], name.as_bytes()] {
            // When the buffer fills, the last record is cut short: the guest sees a full
            // buffer, knows more entries remain, and asks again from the last whole entry.
            let take = (len - used).min(part.len() as u32);
            if let Err(e) = m.write(buf + used, &part[..take as usize]) {
                fault = Some(e);
                return false;
            }
            used += take;
        }
        used < len
    });
    if let Some(e) = fault {
        return Err(e.into());
    }
    c.moved += u64::from(used);
    m.write_u32(out, used)?;
    Ok(())
}

pub(super) fn seek(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, offset: i64, how: u32, out: u32) -> R {
    let e = c.fds.get_mut(fd)?;
    let base = e.base;
    let of = match &mut e.kind {
        FdKind::File(of) => of,
        FdKind::Dir(_) => return Err(errno::ISDIR.into()),
        _ => return Err(errno::SPIPE.into()),
    };
    let tell_only = offset == 0 && how == u32::from(whence::CUR);
    let needed = if tell_only { rights::FD_TELL | rights::FD_SEEK } else { rights::FD_SEEK };
    if base & needed == 0 {
        return Err(errno::NOTCAPABLE.into());
    }
    let from = match u8::try_from(how) {
        Ok(whence::SET) => 0,
        Ok(whence::CUR) => of.pos,
        Ok(whence::END) => of.node.size(),
        _ => return Err(errno::INVAL.into()),
    };
    let pos = i64::try_from(from).ok().and_then(|f| f.checked_add(offset)).filter(|&p| p >= 0).ok_or(errno::INVAL)?;
    of.pos = pos as u64;
    m.write_u64(out, of.pos)?;
    Ok(())
}

pub(super) fn tell(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, out: u32) -> R {
    let e = c.fds.get(fd)?;
    let pos = match &e.kind {
        FdKind::File(of) => of.pos,
        FdKind::Dir(_) => return Err(errno::ISDIR.into()),
        _ => return Err(errno::SPIPE.into()),
    };
    e.require(rights::FD_TELL)?;
    m.write_u64(out, pos)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstflags_are_validated() {
        assert_eq!(times_to_set(1, 2, 0, 9), Ok((None, None)));
        assert_eq!(times_to_set(1, 2, u32::from(fstflags::MTIM), 9), Ok((None, Some(2))));
        assert_eq!(times_to_set(1, 2, u32::from(fstflags::ATIM_NOW), 9), Ok((Some(9), None)));
        assert_eq!(times_to_set(1, 2, u32::from(fstflags::MTIM | fstflags::MTIM_NOW), 9), Err(errno::INVAL));
        assert_eq!(times_to_set(1, 2, u32::from(fstflags::ATIM | fstflags::ATIM_NOW), 9), Err(errno::INVAL));
        assert_eq!(times_to_set(1, 2, 1 << 7, 9), Err(errno::INVAL));
    }
}
