//! Helpers for the test guests: safe wrappers over the raw `wasi_snapshot_preview1` calls of
//! the `wasi` crate, and readable assertions. In the style of WebAssembly/wasi-testsuite: a
//! guest checks behaviour with assertions (a failure panics, which traps) and exits 0 when
//! everything held.
//!
//! Every guest only does something under `wasm32-wasip1`; built natively it says so and exits.
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, reason = "test programs: a failed unwrap is a failed test")]

/// Declares `main`: the guest's `guest::main` under WASI, a stub elsewhere.
#[macro_export]
macro_rules! entry {
    () => {
        #[cfg(target_os = "wasi")]
        fn main() {
            guest::main()
        }
        #[cfg(not(target_os = "wasi"))]
        fn main() {
            eprintln!("this program is a wasm32-wasip1 test guest; build it with --target wasm32-wasip1");
            std::process::exit(2);
        }
    };
}

/// `assert_errno!(call, ERRNO_A, ERRNO_B)`: the call failed with one of the listed errnos.
#[macro_export]
macro_rules! assert_errno {
    ($e:expr, $($errno:expr),+ $(,)?) => {{
        let accepted = [$($errno),+];
        match $e {
            Ok(_) => panic!("{}: expected errno {:?}, but the call succeeded", stringify!($e), accepted),
            Err(got) => assert!(
                accepted.contains(&got),
                "{}: expected errno {:?}, got {:?}",
                stringify!($e),
                accepted,
                got
            ),
        }
    }};
}

#[cfg(target_os = "wasi")]
pub use imp::*;

#[cfg(target_os = "wasi")]
mod imp {
    pub use wasi::*;

    /// Result of a raw call.
    pub type R<T> = Result<T, Errno>;

    /// Rights for a scratch directory and what it passes on to files.
    pub const DIR_RIGHTS: Rights = RIGHTS_PATH_CREATE_DIRECTORY
        | RIGHTS_PATH_CREATE_FILE
        | RIGHTS_PATH_LINK_SOURCE
        | RIGHTS_PATH_LINK_TARGET
        | RIGHTS_PATH_OPEN
        | RIGHTS_FD_READDIR
        | RIGHTS_PATH_READLINK
        | RIGHTS_PATH_RENAME_SOURCE
        | RIGHTS_PATH_RENAME_TARGET
        | RIGHTS_PATH_FILESTAT_GET
        | RIGHTS_PATH_FILESTAT_SET_SIZE
        | RIGHTS_PATH_FILESTAT_SET_TIMES
        | RIGHTS_FD_FILESTAT_GET
        | RIGHTS_FD_FILESTAT_SET_TIMES
        | RIGHTS_PATH_SYMLINK
        | RIGHTS_PATH_REMOVE_DIRECTORY
        | RIGHTS_PATH_UNLINK_FILE;
    /// Rights for a file opened to read, write and change it.
    pub const FILE_RIGHTS: Rights = RIGHTS_FD_READ
        | RIGHTS_FD_WRITE
        | RIGHTS_FD_SEEK
        | RIGHTS_FD_TELL
        | RIGHTS_FD_FILESTAT_GET
        | RIGHTS_FD_FILESTAT_SET_SIZE
        | RIGHTS_FD_FILESTAT_SET_TIMES
        | RIGHTS_FD_ADVISE
        | RIGHTS_FD_ALLOCATE
        | RIGHTS_FD_FDSTAT_SET_FLAGS
        | RIGHTS_FD_SYNC
        | RIGHTS_FD_DATASYNC;

    /// The descriptor of the preopened directory named `name`.
    pub fn preopen(name: &str) -> Fd {
        for fd in 3.. {
            let Ok(p) = (unsafe { fd_prestat_get(fd) }) else { break };
            let len = unsafe { p.u.dir.pr_name_len };
            let mut buf = vec![0u8; len];
            unsafe { fd_prestat_dir_name(fd, buf.as_mut_ptr(), len) }.unwrap();
            if buf == name.as_bytes() {
                return fd;
            }
        }
        panic!("no preopened directory named {name}");
    }

    /// The descriptor of `/data/outputs`.
    pub fn outputs() -> Fd {
        preopen("/data/outputs")
    }

    /// The descriptor of `/data/inputs`.
    pub fn inputs() -> Fd {
        preopen("/data/inputs")
    }

    /// `path_open` of `path` under `dir` (following a final symlink when `follow`), with rights
    /// `base`, and every directory and file right inheritable.
    pub fn open(dir: Fd, follow: bool, path: &str, oflags: Oflags, base: Rights, fdflags: Fdflags) -> R<Fd> {
        let lookup = if follow { LOOKUPFLAGS_SYMLINK_FOLLOW } else { 0 };
        unsafe { path_open(dir, lookup, path, oflags, base, base | DIR_RIGHTS | FILE_RIGHTS, fdflags) }
    }

    /// Creates directory `name` in `parent` and opens it with every directory right.
    pub fn scratch(parent: Fd, name: &str) -> Fd {
        unsafe { path_create_directory(parent, name) }.unwrap();
        open_dir(parent, name)
    }

    /// Opens directory `path` under `parent` with every directory right.
    pub fn open_dir(parent: Fd, path: &str) -> Fd {
        open(parent, false, path, OFLAGS_DIRECTORY, DIR_RIGHTS, 0).unwrap()
    }

    /// Creates (or opens) `path` for reading and writing, following symlinks like `open(2)`.
    pub fn create(dir: Fd, path: &str) -> Fd {
        open(dir, true, path, OFLAGS_CREAT, FILE_RIGHTS, 0).unwrap()
    }

    /// One `fd_write` of `data`: the bytes written.
    pub fn write(fd: Fd, data: &[u8]) -> R<usize> {
        unsafe { fd_write(fd, &[Ciovec { buf: data.as_ptr(), buf_len: data.len() }]) }
    }

    /// One `fd_read` into `buf`: the bytes read (0 at end of file).
    pub fn read(fd: Fd, buf: &mut [u8]) -> R<usize> {
        unsafe { fd_read(fd, &[Iovec { buf: buf.as_mut_ptr(), buf_len: buf.len() }]) }
    }

    /// Reads from `fd` until end of file.
    pub fn read_all(fd: Fd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = read(fd, &mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Writes a whole file.
    pub fn put(dir: Fd, path: &str, data: &[u8]) {
        let fd = create(dir, path);
        assert_eq!(write(fd, data).unwrap(), data.len());
        close(fd);
    }

    /// Reads a whole file.
    pub fn get(dir: Fd, path: &str) -> Vec<u8> {
        let fd = open(dir, true, path, 0, RIGHTS_FD_READ, 0).unwrap();
        let data = read_all(fd);
        close(fd);
        data
    }

    /// Closes `fd`; panics if that fails.
    pub fn close(fd: Fd) {
        unsafe { fd_close(fd) }.unwrap();
    }

    /// `fd_fdstat_get`.
    pub fn fdstat(fd: Fd) -> R<Fdstat> {
        unsafe { fd_fdstat_get(fd) }
    }

    /// `fd_filestat_get`.
    pub fn filestat(fd: Fd) -> R<Filestat> {
        unsafe { fd_filestat_get(fd) }
    }

    /// `path_filestat_get` of `path` under `dir`, following a final symlink when `follow`.
    pub fn stat(dir: Fd, follow: bool, path: &str) -> R<Filestat> {
        unsafe { path_filestat_get(dir, if follow { LOOKUPFLAGS_SYMLINK_FOLLOW } else { 0 }, path) }
    }

    /// `path_create_directory`.
    pub fn mkdir(dir: Fd, path: &str) -> R<()> {
        unsafe { path_create_directory(dir, path) }
    }

    /// `path_remove_directory`.
    pub fn rmdir(dir: Fd, path: &str) -> R<()> {
        unsafe { path_remove_directory(dir, path) }
    }

    /// `path_unlink_file`.
    pub fn unlink(dir: Fd, path: &str) -> R<()> {
        unsafe { path_unlink_file(dir, path) }
    }

    /// `path_symlink`: creates `path` under `dir` pointing to `target`.
    pub fn symlink(target: &str, dir: Fd, path: &str) -> R<()> {
        unsafe { path_symlink(target, dir, path) }
    }

    /// `path_rename`.
    pub fn rename(dir: Fd, from: &str, to_dir: Fd, to: &str) -> R<()> {
        unsafe { path_rename(dir, from, to_dir, to) }
    }

    /// `path_link`, following a final symlink of `from` when `follow`.
    pub fn link(dir: Fd, follow: bool, from: &str, to_dir: Fd, to: &str) -> R<()> {
        unsafe { path_link(dir, if follow { LOOKUPFLAGS_SYMLINK_FOLLOW } else { 0 }, from, to_dir, to) }
    }

    /// `path_readlink` into `buf`: the bytes of the target written.
    pub fn readlink(dir: Fd, path: &str, buf: &mut [u8]) -> R<usize> {
        unsafe { path_readlink(dir, path, buf.as_mut_ptr(), buf.len()) }
    }

    /// `fd_seek`: the new offset.
    pub fn seek(fd: Fd, offset: i64, whence: Whence) -> R<u64> {
        unsafe { fd_seek(fd, offset, whence) }
    }

    /// One `fd_readdir` call: the complete entries in the buffer, and whether the buffer
    /// came back full (more may follow).
    pub fn readdir_once(fd: Fd, cookie: u64, buf_len: usize) -> R<(Vec<(String, Dirent)>, bool)> {
        let mut buf = vec![0u8; buf_len];
        let used = unsafe { fd_readdir(fd, buf.as_mut_ptr(), buf_len, cookie) }?;
        let mut out = Vec::new();
        let mut at = 0;
        let header = size_of::<Dirent>();
        while at + header <= used {
            let d: Dirent = unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let end = at + header + d.d_namlen as usize;
            if end > used {
                break;
            }
            out.push((String::from_utf8(buf[at + header..end].to_vec()).unwrap(), d));
            at = end;
        }
        Ok((out, used == buf_len))
    }

    /// Every entry of a directory, following cookies, with a buffer of `buf_len` bytes.
    pub fn readdir_all(fd: Fd, buf_len: usize) -> Vec<(String, Dirent)> {
        let mut all: Vec<(String, Dirent)> = Vec::new();
        let mut cookie = 0;
        loop {
            let (entries, full) = readdir_once(fd, cookie, buf_len).unwrap();
            if let Some((_, last)) = entries.last() {
                cookie = last.d_next;
            }
            all.extend(entries);
            if !full {
                return all;
            }
        }
    }

    /// The names `readdir_all` returns.
    pub fn names(fd: Fd) -> Vec<String> {
        readdir_all(fd, 4096).into_iter().map(|(n, _)| n).collect()
    }

    /// The guest's arguments, `argv[0]` first.
    pub fn args() -> Vec<String> {
        std::env::args().collect()
    }
}
