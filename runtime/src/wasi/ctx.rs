//! Per-job WASI state: the descriptor table, captured stdio, the virtual clock and the seeded
//! random stream. Everything a guest can observe through the host functions is derived from
//! this state and the job's inputs, never from the host's clocks, entropy or environment.

use std::rc::Rc;

use super::abi::{errno, fdflags, filetype, rights};
use super::mem::Errno;
use super::vfs::{DirRef, File, Vfs};

/// The most descriptors a guest may hold open at once (`EMFILE` beyond).
pub(crate) const MAX_FDS: usize = 1024;

/// Nanoseconds of virtual time that one unit of fuel stands for.
///
/// The virtual clock advances with the work the guest has done (fuel consumed) plus the time
/// it has slept (`poll_oneoff`), so timing loops terminate and elapsed-time reports are
/// meaningful, yet every run of the same job reads the same times.
pub(crate) const NS_PER_FUEL: u64 = 1;

/// `CLOCK_REALTIME` at the start of every job: 2025-01-01T00:00:00Z, in ns.
pub(crate) const REALTIME_BASE_NS: u64 = 1_735_689_600_000_000_000;

/// What a descriptor refers to.
pub(crate) enum FdKind {
    Stdin,
    Stdout,
    Stderr,
    Dir(DirRef),
    File(OpenFile),
}

/// A file opened by the guest: the node and the descriptor's own position.
pub(crate) struct OpenFile {
    pub node: Rc<File>,
    pub pos: u64,
}

/// One slot of the descriptor table.
pub(crate) struct Fd {
    pub kind: FdKind,
    pub base: u64,
    pub inheriting: u64,
    pub flags: u16,
    /// The guest path of a preopened directory (`/algorithm`, `/data/inputs`, ...).
    pub preopen: Option<String>,
}

impl Fd {
    /// `ENOTCAPABLE` unless the descriptor carries every right in `needed`.
    pub(crate) fn require(&self, needed: u64) -> Result<(), Errno> {
        if self.base & needed == needed { Ok(()) } else { Err(errno::NOTCAPABLE) }
    }

    pub(crate) fn filetype(&self) -> u8 {
        match self.kind {
            // A pipe-like stream, not a terminal: `isatty()` is false, so guests behave the
            // same whether the provider runs under a terminal or not.
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => filetype::UNKNOWN,
            FdKind::Dir(_) => filetype::DIRECTORY,
            FdKind::File(_) => filetype::REGULAR_FILE,
        }
    }
}

/// The descriptor table. New descriptors take the lowest free number.
#[derive(Default)]
pub(crate) struct FdTable {
    slots: Vec<Option<Fd>>,
}

impl FdTable {
    pub(crate) fn get(&self, fd: u32) -> Result<&Fd, Errno> {
        self.slots.get(fd as usize).and_then(Option::as_ref).ok_or(errno::BADF)
    }

    pub(crate) fn get_mut(&mut self, fd: u32) -> Result<&mut Fd, Errno> {
        self.slots.get_mut(fd as usize).and_then(Option::as_mut).ok_or(errno::BADF)
    }

    /// Inserts `fd` at the lowest free number.
    pub(crate) fn insert(&mut self, fd: Fd) -> Result<u32, Errno> {
        let at = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < MAX_FDS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(errno::MFILE),
        };
        self.slots[at] = Some(fd);
        Ok(at as u32)
    }

    pub(crate) fn remove(&mut self, fd: u32) -> Result<Fd, Errno> {
        self.slots.get_mut(fd as usize).and_then(Option::take).ok_or(errno::BADF)
    }

    /// Moves `from` onto `to` (closing what `to` held). Both must be open.
    pub(crate) fn renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        self.get(from)?;
        self.get(to)?;
        if from != to {
            let moved = self.remove(from)?;
            self.slots[to as usize] = Some(moved);
        }
        Ok(())
    }
}

/// A captured output stream: the first `cap` bytes are kept, the rest counted and dropped.
pub(crate) struct Capture {
    kept: Vec<u8>,
    cap: usize,
    total: u64,
    lines: Option<LineSplitter>,
}

/// Receives each complete line of a captured stream.
pub(crate) type LineSink = Box<dyn FnMut(&[u8])>;

/// Hands complete lines of a stream to a callback (used to surface guest progress events).
struct LineSplitter {
    partial: Vec<u8>,
    overflowed: bool,
    sink: LineSink,
}

/// Longest line handed to a line sink; longer lines are skipped, so memory stays bounded.
const MAX_LINE: usize = 64 * 1024;

impl Capture {
    pub(crate) fn new(cap: u64) -> Self {
        Self { kept: Vec::new(), cap: usize::try_from(cap).unwrap_or(usize::MAX), total: 0, lines: None }
    }

    /// Also hand every complete line (without its `\n`) to `sink` as it is written.
    pub(crate) fn with_line_sink(mut self, sink: LineSink) -> Self {
        self.lines = Some(LineSplitter { partial: Vec::new(), overflowed: false, sink });
        self
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        if let Some(lines) = &mut self.lines {
            for chunk in data.split_inclusive(|&b| b == b'\n') {
                let complete = chunk.ends_with(b"\n");
                let body = if complete { &chunk[..chunk.len() - 1] } else { chunk };
                if lines.partial.len() + body.len() > MAX_LINE {
                    lines.overflowed = true;
                    lines.partial.clear();
                } else if !lines.overflowed {
                    lines.partial.extend_from_slice(body);
                }
                if complete {
                    if !lines.overflowed {
                        (lines.sink)(&lines.partial);
                    }
                    lines.partial.clear();
                    lines.overflowed = false;
                }
            }
        }
    }

    /// The bytes kept, and how many were written in all.
    pub(crate) fn finish(self) -> (Vec<u8>, u64) {
        (self.kept, self.total)
    }
}

/// The job's virtual clock.
#[derive(Default)]
pub(crate) struct VirtualClock {
    /// Fuel consumed before the current host call.
    pub fuel_used: u64,
    /// Virtual nanoseconds slept in `poll_oneoff`.
    pub slept_ns: u64,
}

impl VirtualClock {
    /// Nanoseconds since the job started.
    pub(crate) fn elapsed_ns(&self) -> u64 {
        self.fuel_used.saturating_mul(NS_PER_FUEL).saturating_add(self.slept_ns)
    }

    pub(crate) fn realtime_ns(&self) -> u64 {
        REALTIME_BASE_NS.saturating_add(self.elapsed_ns())
    }
}

/// Everything the WASI host functions of one job work on.
pub(crate) struct WasiCtx {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub vfs: Vfs,
    pub fds: FdTable,
    pub clock: VirtualClock,
    pub random: blake3::OutputReader,
    pub stdout: Capture,
    pub stderr: Capture,
    /// Bytes moved by the current host call, charged as fuel when it returns.
    pub moved: u64,
}

impl WasiCtx {
    /// A context with stdio on descriptors 0–2 and the given preopened directories from 3 on,
    /// in order. `seed` keys the random stream.
    pub(crate) fn new(
        args: Vec<String>,
        vfs: Vfs,
        preopens: Vec<(String, DirRef, bool)>,
        seed: [u8; 32],
        stdout: Capture,
        stderr: Capture,
    ) -> Self {
        let mut fds = FdTable::default();
        let stdio = [
            (FdKind::Stdin, rights::FD_READ | rights::FD_FILESTAT_GET | rights::POLL_FD_READWRITE),
            (FdKind::Stdout, rights::FD_WRITE | rights::FD_FILESTAT_GET | rights::POLL_FD_READWRITE),
            (FdKind::Stderr, rights::FD_WRITE | rights::FD_FILESTAT_GET | rights::POLL_FD_READWRITE),
        ];
        for (kind, base) in stdio {
            // The table is empty: these take 0, 1, 2 and cannot fail.
            let _ = fds.insert(Fd { kind, base, inheriting: 0, flags: 0, preopen: None });
        }
        for (path, dir, writable) in preopens {
            let (base, inheriting) = if writable {
                (rights::DIR_ALL, rights::DIR_ALL | rights::FILE_ALL)
            } else {
                (rights::DIR_READ_ONLY, rights::DIR_READ_ONLY | rights::FILE_READ_ONLY)
            };
            let _ = fds.insert(Fd { kind: FdKind::Dir(dir), base, inheriting, flags: 0, preopen: Some(path) });
        }
        let mut hasher = blake3::Hasher::new_keyed(&seed);
        hasher.update(b"tidepool random_get v1");
        Self {
            args,
            env: Vec::new(),
            vfs,
            fds,
            clock: VirtualClock::default(),
            random: hasher.finalize_xof(),
            stdout,
            stderr,
            moved: 0,
        }
    }
}

/// Flags `fd_fdstat_set_flags` and `path_open` accept. `DSYNC`, `RSYNC` and `SYNC` are
/// accepted and have no effect: outputs become durable when the job's outputs are
/// materialized, not write by write.
pub(crate) const ACCEPTED_FDFLAGS: u16 = fdflags::ALL;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn capture_keeps_a_prefix_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.write(b"hello world");
        c.write(b"!");
        assert_eq!(c.finish(), (b"hello".to_vec(), 12));
    }

    #[test]
    fn capture_hands_complete_lines_to_the_sink() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let mut c = Capture::new(1024).with_line_sink(Box::new(move |l| s.borrow_mut().push(l.to_vec())));
        c.write(b"one\ntw");
        c.write(b"o\nthree");
        assert_eq!(*seen.borrow(), vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn overlong_lines_are_skipped_not_buffered() {
        let seen = Rc::new(RefCell::new(0));
        let s = seen.clone();
        let mut c = Capture::new(0).with_line_sink(Box::new(move |_| *s.borrow_mut() += 1));
        c.write(&vec![b'x'; MAX_LINE + 1]);
        c.write(b"\nshort\n");
        assert_eq!(*seen.borrow(), 1, "only the short line is delivered");
    }

    #[test]
    fn fd_table_reuses_the_lowest_number_and_renumbers() {
        let mut t = FdTable::default();
        let fd = |flags| Fd { kind: FdKind::Stdin, base: 0, inheriting: 0, flags, preopen: None };
        assert_eq!(t.insert(fd(0)), Ok(0));
        assert_eq!(t.insert(fd(1)), Ok(1));
        assert_eq!(t.insert(fd(2)), Ok(2));
        t.remove(1).unwrap();
        assert_eq!(t.insert(fd(3)), Ok(1));
        t.renumber(0, 2).unwrap();
        assert_eq!(t.get(2).unwrap().flags, 0);
        assert_eq!(t.get(0).err(), Some(errno::BADF));
        assert_eq!(t.renumber(2, 0), Err(errno::BADF), "the target must be open");
    }
}
