//! `path_*` functions. Each resolves its path with [`Vfs::lookup`](super::super::vfs::Vfs::lookup)
//! relative to a directory descriptor, which is the sandbox for that call: nothing above it can
//! be named. Errors follow POSIX (Linux) where WASI leaves a choice, for example `EISDIR` when
//! unlinking a directory and `ELOOP` when opening a symlink without following it.

use super::super::abi::{errno, fdflags, lookupflags, oflags, rights};
use super::super::ctx::{ACCEPTED_FDFLAGS, Fd, FdKind, OpenFile, WasiCtx};
use super::super::mem::{Errno, GuestMem};
use super::super::vfs::{DirRef, Fault, Lookup, Node};
use super::fd::{times_to_set, write_filestat};

type R = Result<(), Fault>;

/// The directory behind `fd`, after checking it carries `needed`, with its inheriting rights.
fn dir_fd(c: &WasiCtx, fd: u32, needed: u64) -> Result<(DirRef, u64), Errno> {
    let e = c.fds.get(fd)?;
    let FdKind::Dir(d) = &e.kind else { return Err(errno::NOTDIR) };
    e.require(needed)?;
    Ok((d.clone(), e.inheriting))
}

/// The path argument, charged as bytes moved.
fn path_arg<'m>(c: &mut WasiCtx, m: &'m GuestMem<'_>, ptr: u32, len: u32) -> Result<&'m str, Errno> {
    c.moved += u64::from(len);
    m.str(ptr, len)
}

fn follows(flags: u32) -> bool {
    flags & lookupflags::SYMLINK_FOLLOW != 0
}

pub(super) fn create_directory(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, p: u32, pl: u32) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_CREATE_DIRECTORY)?;
    let path = path_arg(c, m, p, pl)?;
    match c.vfs.lookup(&dir, path, false)? {
        Lookup::Found { .. } => Err(errno::EXIST.into()),
        Lookup::Missing { parent, name, .. } => c.vfs.create_dir(&parent, &name),
    }
}

pub(super) fn filestat_get(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, flags: u32, p: u32, pl: u32, out: u32) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_FILESTAT_GET)?;
    let path = path_arg(c, m, p, pl)?;
    match c.vfs.lookup(&dir, path, follows(flags))? {
        Lookup::Found { node, .. } => Ok(write_filestat(m, out, &node.stat())?),
        Lookup::Missing { .. } => Err(errno::NOENT.into()),
    }
}

pub(super) fn filestat_set_times(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    fd: u32,
    flags: u32,
    p: u32,
    pl: u32,
    (atim, mtim, fst): (u64, u64, u32),
) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_FILESTAT_SET_TIMES)?;
    let (a, t) = times_to_set(atim, mtim, fst, c.clock.realtime_ns())?;
    let path = path_arg(c, m, p, pl)?;
    match c.vfs.lookup(&dir, path, follows(flags))? {
        Lookup::Found { node, .. } => {
            node.set_times(a, t);
            Ok(())
        }
        Lookup::Missing { .. } => Err(errno::NOENT.into()),
    }
}

pub(super) fn link(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    (old_fd, old_flags, op, opl): (u32, u32, u32, u32),
    (new_fd, np, npl): (u32, u32, u32),
) -> R {
    let (old_dir, _) = dir_fd(c, old_fd, rights::PATH_LINK_SOURCE)?;
    let (new_dir, _) = dir_fd(c, new_fd, rights::PATH_LINK_TARGET)?;
    let old_path = path_arg(c, m, op, opl)?;
    let node = match c.vfs.lookup(&old_dir, old_path, follows(old_flags))? {
        Lookup::Found { node, .. } => node,
        Lookup::Missing { .. } => return Err(errno::NOENT.into()),
    };
    let new_path = path_arg(c, m, np, npl)?;
    match c.vfs.lookup(&new_dir, new_path, false)? {
        Lookup::Found { .. } => Err(errno::EXIST.into()),
        Lookup::Missing { must_be_dir: true, .. } => Err(errno::NOENT.into()),
        Lookup::Missing { parent, name, .. } => c.vfs.link(&node, &parent, &name),
    }
}

#[allow(clippy::too_many_arguments, reason = "mirrors the ABI of path_open")]
pub(super) fn open(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    fd: u32,
    dirflags: u32,
    (p, pl): (u32, u32),
    oflags: u32,
    (base, inheriting): (u64, u64),
    fdflags: u32,
    out: u32,
) -> R {
    let oflags = u16::try_from(oflags).map_err(|_| errno::INVAL)?;
    if oflags & !(oflags::CREAT | oflags::DIRECTORY | oflags::EXCL | oflags::TRUNC) != 0 {
        return Err(errno::INVAL.into());
    }
    let fdflags = u16::try_from(fdflags).ok().filter(|f| f & !ACCEPTED_FDFLAGS == 0).ok_or(errno::INVAL)?;
    let mut needed = rights::PATH_OPEN;
    if oflags & oflags::CREAT != 0 {
        needed |= rights::PATH_CREATE_FILE;
    }
    if oflags & oflags::TRUNC != 0 {
        needed |= rights::PATH_FILESTAT_SET_SIZE;
    }
    let (dir, dir_inheriting) = dir_fd(c, fd, needed)?;
    let path = path_arg(c, m, p, pl)?;
    let node = match c.vfs.lookup(&dir, path, follows(dirflags))? {
        Lookup::Found { node, .. } => {
            if oflags & oflags::CREAT != 0 && oflags & oflags::EXCL != 0 {
                return Err(errno::EXIST.into());
            }
            match &node {
                // The last component is a symlink and the guest asked not to follow it.
                Node::Symlink(_) => return Err(errno::LOOP.into()),
                Node::Dir(_) => {
                    if oflags & oflags::TRUNC != 0 || base & rights::FD_WRITE != 0 {
                        return Err(errno::ISDIR.into());
                    }
                }
                Node::File(f) => {
                    if oflags & oflags::DIRECTORY != 0 {
                        return Err(errno::NOTDIR.into());
                    }
                    if oflags & oflags::TRUNC != 0 {
                        f.set_size(0)?;
                    }
                }
            }
            node
        }
        Lookup::Missing { parent, name, must_be_dir } => {
            if oflags & oflags::CREAT == 0 {
                return Err(errno::NOENT.into());
            }
            if oflags & oflags::DIRECTORY != 0 {
                return Err(errno::INVAL.into());
            }
            if must_be_dir {
                return Err(errno::ISDIR.into());
            }
            Node::File(c.vfs.create_file(&parent, &name)?)
        }
    };
    // The new descriptor gets what was asked for, within what the directory passes on, and
    // only rights that make sense for what was opened.
    let base = base & dir_inheriting;
    let (kind, base) = match node {
        Node::Dir(d) => (FdKind::Dir(d), base & rights::DIR_ALL),
        Node::File(f) => (FdKind::File(OpenFile { node: f, pos: 0 }), base & rights::FILE_ALL),
        Node::Symlink(_) => return Err(errno::LOOP.into()),
    };
    let new_fd = c.fds.insert(Fd {
        kind,
        base,
        inheriting: inheriting & dir_inheriting,
        flags: fdflags & (fdflags::ALL),
        preopen: None,
    })?;
    m.write_u32(out, new_fd)?;
    Ok(())
}

pub(super) fn readlink(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    fd: u32,
    (p, pl): (u32, u32),
    (buf, len): (u32, u32),
    out: u32,
) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_READLINK)?;
    let path = path_arg(c, m, p, pl)?;
    let target = match c.vfs.lookup(&dir, path, false)? {
        Lookup::Found { node: Node::Symlink(l), .. } => l.target.clone(),
        Lookup::Found { .. } => return Err(errno::INVAL.into()),
        Lookup::Missing { .. } => return Err(errno::NOENT.into()),
    };
    // Like readlink(2): silently truncated to the buffer, no NUL.
    let n = target.len().min(len as usize);
    m.write(buf, &target.as_bytes()[..n])?;
    c.moved += n as u64;
    m.write_u32(out, n as u32)?;
    Ok(())
}

pub(super) fn remove_directory(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, p: u32, pl: u32) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_REMOVE_DIRECTORY)?;
    let path = path_arg(c, m, p, pl)?;
    match c.vfs.lookup(&dir, path, false)? {
        Lookup::Missing { .. } => Err(errno::NOENT.into()),
        Lookup::Found { node: Node::Dir(_), link: Some((parent, name)), .. } => c.vfs.remove_dir(&parent, &name),
        // `.`, `..`, or the descriptor's own directory.
        Lookup::Found { node: Node::Dir(_), link: None, .. } => Err(errno::INVAL.into()),
        Lookup::Found { .. } => Err(errno::NOTDIR.into()),
    }
}

pub(super) fn rename(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    (ofd, op, opl): (u32, u32, u32),
    (nfd, np, npl): (u32, u32, u32),
) -> R {
    let (old_dir, _) = dir_fd(c, ofd, rights::PATH_RENAME_SOURCE)?;
    let (new_dir, _) = dir_fd(c, nfd, rights::PATH_RENAME_TARGET)?;
    let old_path = path_arg(c, m, op, opl)?;
    let (src, src_parent, src_name) = match c.vfs.lookup(&old_dir, old_path, false)? {
        Lookup::Missing { .. } => return Err(errno::NOENT.into()),
        Lookup::Found { link: None, .. } => return Err(errno::BUSY.into()),
        Lookup::Found { node, link: Some((parent, name)), .. } => (node, parent, name),
    };
    let is_dir = matches!(src, Node::Dir(_));
    let new_path = path_arg(c, m, np, npl)?;
    let (dst_parent, dst_name, must_be_dir) = match c.vfs.lookup(&new_dir, new_path, false)? {
        Lookup::Missing { parent, name, must_be_dir } => (parent, name, must_be_dir),
        Lookup::Found { link: None, .. } => return Err(errno::BUSY.into()),
        Lookup::Found { link: Some((parent, name)), must_be_dir, .. } => (parent, name, must_be_dir),
    };
    if must_be_dir && !is_dir {
        return Err(errno::NOTDIR.into());
    }
    c.vfs.rename(&src_parent, &src_name, &dst_parent, &dst_name)
}

pub(super) fn symlink(
    c: &mut WasiCtx,
    m: &mut GuestMem<'_>,
    (tp, tpl): (u32, u32),
    (fd, np, npl): (u32, u32, u32),
) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_SYMLINK)?;
    let target = path_arg(c, m, tp, tpl)?.to_string();
    let path = path_arg(c, m, np, npl)?;
    match c.vfs.lookup(&dir, path, false)? {
        Lookup::Found { .. } => Err(errno::EXIST.into()),
        Lookup::Missing { must_be_dir: true, .. } => Err(errno::NOENT.into()),
        Lookup::Missing { parent, name, .. } => c.vfs.create_symlink(&parent, &name, &target),
    }
}

pub(super) fn unlink_file(c: &mut WasiCtx, m: &mut GuestMem<'_>, fd: u32, p: u32, pl: u32) -> R {
    let (dir, _) = dir_fd(c, fd, rights::PATH_UNLINK_FILE)?;
    let path = path_arg(c, m, p, pl)?;
    match c.vfs.lookup(&dir, path, false)? {
        Lookup::Missing { .. } => Err(errno::NOENT.into()),
        Lookup::Found { node: Node::Dir(_), .. } => Err(errno::ISDIR.into()),
        Lookup::Found { link: Some((parent, name)), .. } => c.vfs.unlink(&parent, &name),
        Lookup::Found { link: None, .. } => Err(errno::ISDIR.into()),
    }
}
