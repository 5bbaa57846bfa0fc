//! Canonical tree roots: one BLAKE3 hash for a whole directory tree.
//!
//! # The canonical walk (`tidepool-tree-v1`)
//!
//! A tree is the list of every entry below its root directory (the root itself is not an
//! entry), each named by its relative path: UTF-8, components joined by `/`. Entries are sorted
//! by the bytes of that path. Symlinks are recorded, never followed. The root is
//!
//! ```text
//! BLAKE3( "tidepool-tree-v1\n"
//!         || for each entry, in order:
//!              kind (1 byte: 'd' directory, 'f' file, 'l' symlink)
//!              || u64le(len(path)) || path
//!              || for 'f': u64le(size) || BLAKE3(contents)
//!              || for 'l': u64le(len(target)) || target )
//! ```
//!
//! Every directory is an entry, so empty directories count. Timestamps, permissions and owners
//! do not. The same function serves inputs (before a job), outputs (after it) and `verify`.
//! Test vector: see `tests::empty_and_small_trees_have_fixed_roots`.

use std::io::Read;
use std::path::Path;

use alloy_primitives::B256;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

/// What an entry of a tree is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    /// A directory (its entries are entries of the tree too).
    Dir,
    /// A regular file: its size and the BLAKE3 of its contents.
    File {
        /// Its size, in bytes.
        size: u64,
        /// BLAKE3 of its contents.
        hash: B256,
    },
    /// A symlink, recorded and never followed.
    Symlink {
        /// What it points to, as written.
        target: String,
    },
}

/// One entry of a tree, named by its relative path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path relative to the tree's root: UTF-8, components joined by `/`.
    pub path: String,
    /// What it is (and, for a file, its size and hash; for a symlink, its target).
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// A scanned tree: its entries in canonical order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tree {
    /// Every entry below the root, sorted by the bytes of its path.
    pub entries: Vec<Entry>,
}

/// Why a directory could not be scanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Reading the directory or a file failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A name, or a symlink's target, is not UTF-8.
    #[error("{path}: file names must be valid UTF-8")]
    NonUtf8Name {
        /// Where, with the offending name lossily decoded.
        path: String,
    },
    /// An entry is neither a file, a directory nor a symlink.
    #[error("{path}: {kind} files are not supported (only files, directories and symlinks)")]
    Unsupported {
        /// The entry's path.
        path: String,
        /// What it is (`FIFO`, `socket`...).
        kind: &'static str,
    },
    /// The tree holds more than [`MAX_ENTRIES`] entries.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
}

/// Most entries one tree may hold.
pub const MAX_ENTRIES: usize = 1_000_000;

const DOMAIN: &[u8] = b"tidepool-tree-v1\n";

impl Tree {
    /// The tree's root hash.
    pub fn root(&self) -> B256 {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        for e in &self.entries {
            let (kind, tail): (u8, Vec<u8>) = match &e.kind {
                EntryKind::Dir => (b'd', Vec::new()),
                EntryKind::File { size, hash } => {
                    let mut t = size.to_le_bytes().to_vec();
                    t.extend_from_slice(hash.as_slice());
                    (b'f', t)
                }
                EntryKind::Symlink { target } => {
                    let mut t = (target.len() as u64).to_le_bytes().to_vec();
                    t.extend_from_slice(target.as_bytes());
                    (b'l', t)
                }
            };
            h.update(&[kind]);
            h.update(&(e.path.len() as u64).to_le_bytes());
            h.update(e.path.as_bytes());
            h.update(&tail);
        }
        B256::from(*h.finalize().as_bytes())
    }

    /// Number of regular files, and their total size.
    pub fn file_stats(&self) -> (u64, u64) {
        self.entries.iter().fold((0, 0), |(n, bytes), e| match e.kind {
            EntryKind::File { size, .. } => (n + 1, bytes + size),
            _ => (n, bytes),
        })
    }
}

/// Scans the directory at `path`.
pub fn scan(path: &Path) -> Result<Tree, ScanError> {
    let dir = Dir::open_ambient_dir(path, ambient_authority())
        .map_err(|source| ScanError::Io { path: path.display().to_string(), source })?;
    scan_dir(&dir)
}

/// Scans an open directory.
///
/// Files of at least [`PARALLEL_MIN`] bytes are hashed on helper threads, one per core (at
/// most [`MAX_HELPERS`]), while the walk goes on: a dataset of several large files hashes
/// at the machine's speed rather than one core's. The helpers start with the first such file
/// (a tree of small files, a job's usual outputs, starts none). The walk opens each file
/// itself (the helpers get open files, never paths), and at most two files per helper wait
/// open at a time.
pub fn scan_dir(dir: &Dir) -> Result<Tree, ScanError> {
    let mut entries = Vec::new();
    scan_parallel(dir, helpers(), &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Tree { entries })
}

/// Files at least this large are hashed on a helper thread (smaller ones by the walk itself:
/// handing them over would cost more than hashing them).
pub const PARALLEL_MIN: u64 = 1 << 20;
/// Most helper threads of one scan.
const MAX_HELPERS: usize = 4;

/// Helper threads a scan may start: one per core, at most [`MAX_HELPERS`]; none on one core.
fn helpers() -> usize {
    static HELPERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *HELPERS.get_or_init(|| match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => 0,
        n => n.min(MAX_HELPERS),
    })
}

/// A file the walk hands to a helper: its entry's index, its path (for errors), the file and
/// its size when opened.
type Handed = (usize, String, std::fs::File, u64);

/// [`scan_dir`]'s walk with up to `helpers` threads hashing the large files.
fn scan_parallel(dir: &Dir, helpers: usize, entries: &mut Vec<Entry>) -> Result<(), ScanError> {
    use std::sync::mpsc::{channel, sync_channel};
    let (done_tx, done_rx) = channel::<(usize, Result<(u64, B256), ScanError>)>();
    std::thread::scope(|s| {
        // The helpers' queue, once the first large file is found.
        let mut queue: Option<std::sync::mpsc::SyncSender<Handed>> = None;
        let walked = walk(dir, "", entries, &mut |index, path, file| {
            let len = file.metadata().map_err(io_error(path))?.len();
            if helpers == 0 || len < PARALLEL_MIN {
                return hash_sized(file, len).map(Some).map_err(io_error(path));
            }
            let queue = queue.get_or_insert_with(|| {
                let (work_tx, work_rx) = sync_channel::<Handed>(helpers * 2);
                let work_rx = std::sync::Arc::new(std::sync::Mutex::new(work_rx));
                for _ in 0..helpers {
                    let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
                    s.spawn(move || {
                        loop {
                            // The lock is held only while waiting for the next file.
                            let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok((index, path, file, len)) = next else { break };
                            let hashed = hash_sized(file, len).map_err(io_error(&path));
                            if done_tx.send((index, hashed)).is_err() {
                                break;
                            }
                        }
                    });
                }
                work_tx
            });
            // The helpers only stop once the queue is dropped, so the send cannot fail.
            queue.send((index, path.to_string(), file, len)).map_err(|e| io_error(path)(std::io::Error::other(e)))?;
            Ok(None)
        });
        drop(queue);
        drop(done_tx);
        // Every helper's result, also after a failed walk (the helpers finish what they hold).
        let mut first_error = walked.err();
        for (index, hashed) in done_rx {
            match hashed {
                Ok((size, hash)) => entries[index].kind = EntryKind::File { size, hash },
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn io_error(path: &str) -> impl FnOnce(std::io::Error) -> ScanError + use<> {
    let path = path.to_string();
    move |source| ScanError::Io { path, source }
}

/// Hashes the file at entry `index` (`path`): its size and hash now, or `None` when it is
/// hashed elsewhere and its entry filled in later.
type HashFile<'a> = dyn FnMut(usize, &str, std::fs::File) -> Result<Option<(u64, B256)>, ScanError> + 'a;

fn walk(dir: &Dir, prefix: &str, out: &mut Vec<Entry>, hash: &mut HashFile<'_>) -> Result<(), ScanError> {
    let shown = if prefix.is_empty() { "." } else { prefix };
    for entry in dir.entries().map_err(io_error(shown))? {
        let entry = entry.map_err(io_error(shown))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ScanError::NonUtf8Name { path: format!("{prefix}/{}", name.to_string_lossy()) });
        };
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        if out.len() >= MAX_ENTRIES {
            return Err(ScanError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let ft = entry.file_type().map_err(io_error(&path))?;
        if ft.is_dir() {
            out.push(Entry { path: path.clone(), kind: EntryKind::Dir });
            let sub = entry.open_dir().map_err(io_error(&path))?;
            walk(&sub, &path, out, hash)?;
        } else if ft.is_file() {
            let file = entry.open().map_err(io_error(&path))?;
            // Filled in by the helper that hashes it, when one does.
            let (size, hash) = hash(out.len(), &path, file.into_std())?.unwrap_or_default();
            out.push(Entry { path, kind: EntryKind::File { size, hash } });
        } else if ft.is_symlink() {
            let target = dir.read_link_contents(name).map_err(io_error(&path))?;
            let target = target.to_str().ok_or_else(|| ScanError::NonUtf8Name { path: path.clone() })?.to_string();
            out.push(Entry { path, kind: EntryKind::Symlink { target } });
        } else {
            return Err(ScanError::Unsupported { path, kind: special_kind(&ft) });
        }
    }
    Ok(())
}

fn special_kind(ft: &cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special"
    }
}

/// Files at least this large are read on a second thread while this one hashes.
const PIPELINE_MIN: u64 = 4 << 20;
/// The size of each of the two buffers of a pipelined hash.
const PIPELINE_BUF: usize = 1 << 20;

/// The size and BLAKE3 of a file's contents.
///
/// A large file is read into one buffer by a helper thread while the previous buffer is
/// hashed, so hashing runs at BLAKE3's speed rather than at the sum of reading and hashing
/// (files are read, not memory-mapped: a mapped file truncated under us would kill the
/// process).
pub fn hash_file(file: std::fs::File) -> std::io::Result<(u64, B256)> {
    let len = file.metadata()?.len();
    hash_sized(file, len)
}

/// [`hash_file`] of a file whose size, when it was opened, was `len`.
fn hash_sized(file: std::fs::File, len: u64) -> std::io::Result<(u64, B256)> {
    if len < PIPELINE_MIN {
        return hash_reader(file);
    }
    use std::sync::mpsc::sync_channel;
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        empty_tx.send(vec![0u8; PIPELINE_BUF]).map_err(std::io::Error::other)?;
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> std::io::Result<()> {
            let mut file = file;
            while let Ok(mut buf) = empty_rx.recv() {
                let n = fill(&mut file, &mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        for (buf, n) in full_rx {
            h.update(&buf[..n]);
            size += n as u64;
            // The reader may have finished: then nobody needs the buffer back.
            let _ = empty_tx.send(buf);
        }
        reader.join().map_err(|_| std::io::Error::other("the reading thread panicked"))??;
        Ok((size, B256::from(*h.finalize().as_bytes())))
    })
}

/// Reads until `buf` is full or the end of the file; returns how many bytes were read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether a symlink target is relative and has no `..` component, so that the link resolves
/// below the directory holding it, wherever that is. Symlinks a guest makes in its outputs
/// must (the runtime refuses others with `ENOTCAPABLE`), and clients check downloaded outputs
/// with the same rule.
pub fn points_down(target: &str) -> bool {
    !target.starts_with('/') && !target.split('/').any(|c| c == "..")
}

/// BLAKE3 of everything `reader` yields, and how many bytes that was.
pub fn hash_reader(mut reader: impl Read) -> std::io::Result<(u64, B256)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, B256::from(*h.finalize().as_bytes())))
}

/// BLAKE3 of a byte string, as a `B256`.
pub fn blake3_b256(bytes: &[u8]) -> B256 {
    B256::from(*blake3::hash(bytes).as_bytes())
}

/// How two trees differ, path by path: for a precise "no" from `verify`.
pub fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    use std::collections::BTreeMap;
    let index = |t: &Tree| t.entries.iter().map(|e| (e.path.clone(), e.kind.clone())).collect::<BTreeMap<_, _>>();
    let (a, b) = (index(expected), index(actual));
    let mut out = Vec::new();
    for (path, kind) in &a {
        match b.get(path) {
            None => out.push(format!("missing: {path}")),
            Some(other) if other != kind => out.push(format!("differs: {path}")),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("extra: {path}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_hash_the_same_through_the_pipeline() {
        let tmp = tempfile::tempdir().unwrap();
        // Over the pipelining threshold, and not a whole number of buffers.
        let data: Vec<u8> = (0..PIPELINE_MIN as usize * 2 + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let path = tmp.path().join("big");
        std::fs::write(&path, &data).unwrap();
        let (size, hash) = hash_file(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(hash, blake3_b256(&data));
        std::fs::write(&path, &data[..1000]).unwrap();
        assert_eq!(hash_file(std::fs::File::open(&path).unwrap()).unwrap(), (1000, blake3_b256(&data[..1000])));
    }

    /// A tree of large files (hashed by helpers), small ones (by the walk) and directories
    /// scans to the same entries as a hash of each file read whole, in canonical order, with
    /// any number of helpers; with more large files than helpers and queue hold together, so
    /// the walk waits for them.
    #[test]
    fn files_hashed_on_helper_threads_land_in_their_own_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for d in ["a", "b", "b/c"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
            expected.push(Entry { path: d.to_string(), kind: EntryKind::Dir });
        }
        for i in 0..(MAX_HELPERS * 3 + 1) {
            // Large and small files alternate, each with its own contents and size.
            let size = if i % 2 == 0 { PARALLEL_MIN as usize + i * 4099 } else { 100 + i };
            let data: Vec<u8> = (0..size).map(|k| ((k * 31 + i * 7) % 253) as u8).collect();
            let path = format!("{}/f{i:02}", ["a", "b", "b/c"][i % 3]);
            std::fs::write(tmp.path().join(&path), &data).unwrap();
            expected.push(Entry { path, kind: EntryKind::File { size: size as u64, hash: blake3_b256(&data) } });
        }
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(scan(tmp.path()).unwrap().entries, expected);
        // On one core (no helpers) and with one helper, the same.
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        for helpers in [0, 1, MAX_HELPERS] {
            let mut entries = Vec::new();
            scan_parallel(&dir, helpers, &mut entries).unwrap();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            assert_eq!(entries, expected, "{helpers} helpers");
        }
    }

    /// A walk that fails while helpers hash large files reports its error (after they finish).
    #[test]
    fn a_failed_walk_with_files_in_flight_reports_its_error() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..6 {
            std::fs::write(tmp.path().join(format!("big{i}")), vec![i as u8; PARALLEL_MIN as usize]).unwrap();
        }
        let fifo = std::ffi::CString::new(tmp.path().join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = scan(tmp.path()).unwrap_err();
        assert!(matches!(e, ScanError::Unsupported { ref path, kind: "FIFO" } if path == "pipe"), "{e}");
    }

    #[test]
    fn empty_and_small_trees_have_fixed_roots() {
        // Test vectors: if these change, every receipt ever issued stops verifying.
        let empty = Tree::default();
        assert_eq!(empty.root(), blake3_b256(b"tidepool-tree-v1\n"));

        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        std::fs::write(tmp.path().join("a.txt"), b"hello").unwrap();
        let tree = scan(tmp.path()).unwrap();
        let mut expected = blake3::Hasher::new();
        expected.update(b"tidepool-tree-v1\n");
        expected.update(b"f");
        expected.update(&5u64.to_le_bytes());
        expected.update(b"a.txt");
        expected.update(&5u64.to_le_bytes());
        expected.update(blake3::hash(b"hello").as_bytes());
        expected.update(b"d");
        expected.update(&5u64.to_le_bytes());
        expected.update(b"empty");
        assert_eq!(tree.root(), B256::from(*expected.finalize().as_bytes()));
        assert_eq!(
            tree.root().to_string(),
            "0xfcb62b77ce4d5389bf7d9258a0eaf698c8b89b211f43f6970468672c5c96c57f",
            "the documented test vector"
        );
    }

    #[test]
    fn trees_round_trip_through_json() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("d/f", tmp.path().join("l")).unwrap();
        let tree = scan(tmp.path()).unwrap();
        let json = serde_json::to_value(&tree).unwrap();
        assert_eq!(json[1]["kind"], "file");
        assert_eq!(json[1]["path"], "d/f");
        let back: Tree = serde_json::from_value(json).unwrap();
        assert_eq!(back, tree);
        assert_eq!(back.root(), tree.root());
    }

    #[test]
    fn order_is_by_full_path_bytes_not_walk_order() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        std::fs::write(tmp.path().join("a/b"), b"").unwrap();
        std::fs::write(tmp.path().join("a.b"), b"").unwrap();
        let paths: Vec<_> = scan(tmp.path()).unwrap().entries.into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["a", "a.b", "a/b"]);
    }

    #[test]
    fn symlinks_are_recorded_not_followed_and_specials_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("out")).unwrap();
        let tree = scan(tmp.path()).unwrap();
        assert_eq!(tree.entries[0].kind, EntryKind::Symlink { target: "/etc/passwd".into() });

        let fifo = tmp.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert!(matches!(scan(tmp.path()), Err(ScanError::Unsupported { kind: "FIFO", .. })));
    }

    #[test]
    fn content_changes_change_the_root_and_diff_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("x"), b"1").unwrap();
        std::fs::write(tmp.path().join("y"), b"2").unwrap();
        let before = scan(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("x"), b"changed").unwrap();
        std::fs::remove_file(tmp.path().join("y")).unwrap();
        std::fs::write(tmp.path().join("z"), b"").unwrap();
        let after = scan(tmp.path()).unwrap();
        assert_ne!(before.root(), after.root());
        assert_eq!(diff(&before, &after), ["differs: x", "missing: y", "extra: z"]);
    }
}
