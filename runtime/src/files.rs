//! Small directory trees held in memory: the algorithm of an environment job (a script, or a
//! directory with its entry file) and an environment's extra mounts (such as an SDK). They are
//! staged read-only into the guest's filesystem, hashed like any tree (`tidepool-tree-v1`), and
//! carried between machines in one canonical byte form, the *file archive*.
//!
//! Nothing here touches the guest; this module only reads host directories and bytes and checks
//! what it is given. It must not follow symlinks on the host: a symlink is recorded as a link,
//! and only links that point down (relative, no `..`) are accepted.
//!
//! # The file archive (`tidepool-files-v1`)
//!
//! ```text
//! "tidepool-files-v1\n" || u64le(number of entries)
//! || for each entry, in the tree's canonical order (sorted by the bytes of its path):
//!      kind (1 byte: 'd' directory, 'f' file, 'l' symlink) || u64le(len(path)) || path
//!      || for 'f': u64le(size) || contents
//!      || for 'l': u64le(len(target)) || target
//! ```
//!
//! Paths are relative, `/`-separated UTF-8, without empty, `.` or `..` components; every
//! directory holding an entry is itself an entry, listed before it. The archive of a tree is
//! unique (one tree, one byte string), and the tree's root is computed from what the archive
//! holds, so a receiver checks a claimed `algorithm_hash` against the archive itself.
//! Test vector: `tests::archive_test_vector`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use alloy_primitives::B256;

use crate::tree::{self, Entry, EntryKind, Tree};

/// Longest name of one entry, in bytes (as in the guest's filesystem).
const NAME_MAX: usize = 255;
/// Longest path of one entry, in bytes.
const PATH_MAX: usize = 4096;
/// Most entries one file tree may hold.
pub const MAX_ENTRIES: usize = 10_000;

const MAGIC: &[u8] = b"tidepool-files-v1\n";

/// Why a file tree could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// An entry cannot be part of a file tree (its name, its path, or reading it).
    #[error("{path}: {reason}")]
    Invalid {
        /// The entry's path.
        path: String,
        /// Why, in words.
        reason: String,
    },
    /// The files' contents add up to more than the limit.
    #[error("the files hold more than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// More than [`MAX_ENTRIES`] entries.
    #[error("more than {MAX_ENTRIES} files and directories")]
    TooManyEntries,
    /// The bytes are not an archive this module wrote.
    #[error("not a file archive: {reason}")]
    BadArchive {
        /// What is wrong with them.
        reason: String,
    },
}

/// What one entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file and its contents.
    File(Arc<[u8]>),
    /// A symlink and its target.
    Symlink(String),
}

/// A directory tree in memory, in canonical order, with its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTree {
    entries: Vec<(String, FileKind)>,
    tree: Tree,
    bytes: u64,
}

impl FileTree {
    /// A tree holding one file, `name`.
    pub fn single(name: &str, contents: impl Into<Arc<[u8]>>) -> Result<Self, FilesError> {
        Self::from_entries(vec![(name.to_string(), FileKind::File(contents.into()))], u64::MAX)
    }

    /// A tree from its entries (any order), checked: valid relative paths, no duplicates, every
    /// parent directory present, symlinks pointing down, at most `max_bytes` of file contents.
    pub fn from_entries(mut entries: Vec<(String, FileKind)>, max_bytes: u64) -> Result<Self, FilesError> {
        if entries.len() > MAX_ENTRIES {
            return Err(FilesError::TooManyEntries);
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut dirs = BTreeSet::new();
        let mut bytes = 0u64;
        let mut tree = Vec::with_capacity(entries.len());
        for (i, (path, kind)) in entries.iter().enumerate() {
            let invalid = |reason: &str| FilesError::Invalid { path: path.clone(), reason: reason.to_string() };
            check_path(path).map_err(|r| invalid(&r))?;
            if i > 0 && entries[i - 1].0 == *path {
                return Err(invalid("given twice"));
            }
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(invalid("its parent directory is not an entry"));
            }
            let kind = match kind {
                FileKind::Dir => {
                    dirs.insert(path.as_str());
                    EntryKind::Dir
                }
                FileKind::File(contents) => {
                    bytes = bytes.saturating_add(contents.len() as u64);
                    if bytes > max_bytes {
                        return Err(FilesError::TooLarge { limit: max_bytes });
                    }
                    EntryKind::File { size: contents.len() as u64, hash: tree::blake3_b256(contents) }
                }
                FileKind::Symlink(target) => {
                    if target.is_empty() || !tree::points_down(target) || target.contains('\0') {
                        return Err(invalid("symlinks must point down: relative, without `..`"));
                    }
                    EntryKind::Symlink { target: target.clone() }
                }
            };
            tree.push(Entry { path: path.clone(), kind });
        }
        Ok(Self { entries, tree: Tree { entries: tree }, bytes })
    }

    /// Reads the directory at `dir`: every entry below it, except directories named in `skip`
    /// (with everything in them). Symlinks are recorded, never followed.
    pub fn from_dir(dir: &Path, skip: &[String], max_bytes: u64) -> Result<Self, FilesError> {
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        read_dir(dir, "", skip, max_bytes, &mut bytes, &mut entries)?;
        Self::from_entries(entries, max_bytes)
    }

    /// The entries, in canonical order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &FileKind)> {
        self.entries.iter().map(|(p, k)| (p.as_str(), k))
    }

    /// The file at `path`, if there is one.
    pub fn file(&self, path: &str) -> Option<&Arc<[u8]>> {
        let i = self.entries.binary_search_by(|(p, _)| p.as_str().cmp(path)).ok()?;
        match &self.entries[i].1 {
            FileKind::File(contents) => Some(contents),
            _ => None,
        }
    }

    /// The tree's entries as hashed.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The tree root (`tidepool-tree-v1`).
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// Total bytes of file contents.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The canonical archive of the tree (see the module documentation).
    pub fn to_archive(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, kind) in &self.entries {
            let (k, tail): (u8, &[u8]) = match kind {
                FileKind::Dir => (b'd', &[]),
                FileKind::File(c) => (b'f', c),
                FileKind::Symlink(t) => (b'l', t.as_bytes()),
            };
            out.push(k);
            out.extend_from_slice(&(path.len() as u64).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            if k != b'd' {
                out.extend_from_slice(&(tail.len() as u64).to_le_bytes());
                out.extend_from_slice(tail);
            }
        }
        out
    }

    /// Reads an archive made by [`to_archive`](Self::to_archive), refusing anything that is not
    /// the canonical archive of a valid tree of at most `max_bytes` of contents.
    pub fn from_archive(archive: &[u8], max_bytes: u64) -> Result<Self, FilesError> {
        let bad = |reason: &str| FilesError::BadArchive { reason: reason.to_string() };
        let mut r = Reader(archive.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with tidepool-files-v1"))?);
        let count = r.u64().ok_or_else(|| bad("truncated"))?;
        if count > MAX_ENTRIES as u64 {
            return Err(FilesError::TooManyEntries);
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let kind = r.take(1).ok_or_else(|| bad("truncated"))?[0];
            let path = r.string(PATH_MAX as u64).ok_or_else(|| bad("truncated or invalid path"))?;
            let kind = match kind {
                b'd' => FileKind::Dir,
                b'f' => {
                    let size = r.u64().ok_or_else(|| bad("truncated"))?;
                    if size > max_bytes {
                        return Err(FilesError::TooLarge { limit: max_bytes });
                    }
                    FileKind::File(Arc::from(r.take(size).ok_or_else(|| bad("truncated file contents"))?))
                }
                b'l' => FileKind::Symlink(r.string(PATH_MAX as u64).ok_or_else(|| bad("truncated or invalid link"))?),
                other => return Err(bad(&format!("unknown entry kind {other:#04x}"))),
            };
            if entries.last().is_some_and(|(last, _): &(String, FileKind)| *last >= path) {
                return Err(bad("entries are not in canonical order"));
            }
            entries.push((path, kind));
        }
        if !r.0.is_empty() {
            return Err(bad("bytes after the last entry"));
        }
        Self::from_entries(entries, max_bytes)
    }
}

/// A cursor over archive bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.0.len())?;
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self, max: u64) -> Option<String> {
        let len = self.u64().filter(|&l| l <= max)?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Checks one entry path: relative, `/`-separated, no empty, `.` or `..` components, no NUL,
/// names of at most 255 bytes.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > PATH_MAX {
        return Err(format!("paths must be 1 to {PATH_MAX} bytes"));
    }
    if path.contains('\0') {
        return Err("paths may not contain NUL".into());
    }
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err("paths must be relative, without empty, `.` or `..` components".into());
        }
        if c.len() > NAME_MAX {
            return Err(format!("names are at most {NAME_MAX} bytes"));
        }
    }
    Ok(())
}

fn read_dir(
    dir: &Path,
    prefix: &str,
    skip: &[String],
    max_bytes: u64,
    bytes: &mut u64,
    out: &mut Vec<(String, FileKind)>,
) -> Result<(), FilesError> {
    let shown = |p: &str| if p.is_empty() { dir.display().to_string() } else { p.to_string() };
    let io = |p: &str, e: std::io::Error| FilesError::Invalid { path: shown(p), reason: e.to_string() };
    for entry in std::fs::read_dir(dir).map_err(|e| io(prefix, e))? {
        let entry = entry.map_err(|e| io(prefix, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(FilesError::Invalid {
                path: format!("{prefix}/{}", name.to_string_lossy()),
                reason: "file names must be valid UTF-8".into(),
            });
        };
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        if out.len() >= MAX_ENTRIES {
            return Err(FilesError::TooManyEntries);
        }
        let ft = entry.file_type().map_err(|e| io(&path, e))?;
        if ft.is_dir() {
            if skip.iter().any(|s| s == name) {
                continue;
            }
            out.push((path.clone(), FileKind::Dir));
            read_dir(&entry.path(), &path, skip, max_bytes, bytes, out)?;
        } else if ft.is_file() {
            let contents = std::fs::read(entry.path()).map_err(|e| io(&path, e))?;
            *bytes = bytes.saturating_add(contents.len() as u64);
            if *bytes > max_bytes {
                return Err(FilesError::TooLarge { limit: max_bytes });
            }
            out.push((path, FileKind::File(contents.into())));
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| io(&path, e))?;
            let target = target.to_str().ok_or_else(|| FilesError::Invalid {
                path: path.clone(),
                reason: "symlink targets must be valid UTF-8".into(),
            })?;
            out.push((path, FileKind::Symlink(target.to_string())));
        } else {
            return Err(FilesError::Invalid {
                path,
                reason: "only files, directories and symlinks are supported".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileTree {
        FileTree::from_entries(
            vec![
                ("main.py".into(), FileKind::File(Arc::from(&b"print('hi')\n"[..]))),
                ("lib".into(), FileKind::Dir),
                ("lib/util.py".into(), FileKind::File(Arc::from(&b""[..]))),
                ("link.py".into(), FileKind::Symlink("lib/util.py".into())),
            ],
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn archive_test_vector() {
        let t = sample();
        let archive = t.to_archive();
        assert_eq!(FileTree::from_archive(&archive, 1 << 20).unwrap(), t, "round trip");
        assert_eq!(
            hex::encode(&archive[..MAGIC.len() + 8 + 1 + 8 + 3]),
            hex::encode(b"tidepool-files-v1\n\x04\0\0\0\0\0\0\0d\x03\0\0\0\0\0\0\0lib"),
            "the first entry in canonical order is `lib`"
        );
        assert_eq!(
            tree::blake3_b256(&archive).to_string(),
            "0x7bf1ce6b4f32c1075b1022b333ceae62e6c7610c863088fce66a9da3b130a363",
            "the documented archive of `sample()`"
        );
        assert_eq!(
            t.root().to_string(),
            "0xbeedbfe5d7da68e2ab9e328d0a32bdf7f02c862c98cddfbd7cf0fc3eeed2ab80",
            "its tree root"
        );
    }

    #[test]
    fn the_root_is_the_tree_root_of_the_same_files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/x.pyc"), b"junk").unwrap();
        std::fs::write(dir.path().join("main.py"), b"print('hi')\n").unwrap();
        std::fs::write(dir.path().join("lib/util.py"), b"").unwrap();
        std::os::unix::fs::symlink("lib/util.py", dir.path().join("link.py")).unwrap();
        let read = FileTree::from_dir(dir.path(), &["__pycache__".into()], 1 << 20).unwrap();
        assert_eq!(read, sample(), "skipped directories are left out");
        std::fs::remove_dir_all(dir.path().join("__pycache__")).unwrap();
        assert_eq!(tree::scan(dir.path()).unwrap().root(), sample().root());
    }

    #[test]
    fn bad_trees_and_archives_are_refused() {
        let file = |p: &str| (p.to_string(), FileKind::File(Arc::from(&b"x"[..])));
        for bad in ["", "/abs", "a/../b", "./a", "a//b", "a\0b", &"n".repeat(256)] {
            assert!(FileTree::from_entries(vec![file(bad)], 10).is_err(), "{bad:?}");
        }
        assert!(FileTree::from_entries(vec![file("d/a")], 10).is_err(), "no parent entry");
        assert!(FileTree::from_entries(vec![file("a"), file("a")], 10).is_err(), "duplicate");
        assert!(FileTree::from_entries(vec![("l".into(), FileKind::Symlink("../x".into()))], 10).is_err());
        assert_eq!(FileTree::from_entries(vec![file("a"), file("b")], 1), Err(FilesError::TooLarge { limit: 1 }));

        let archive = sample().to_archive();
        assert!(FileTree::from_archive(&archive[..archive.len() - 1], 1 << 20).is_err(), "truncated");
        assert!(FileTree::from_archive(&[&archive[..], b"x"].concat(), 1 << 20).is_err(), "trailing bytes");
        assert!(FileTree::from_archive(b"PK\x03\x04", 1 << 20).is_err(), "not ours");
        assert_eq!(FileTree::from_archive(&archive, 4), Err(FilesError::TooLarge { limit: 4 }));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(FileTree::from_archive(&huge, 1 << 20), Err(FilesError::TooManyEntries));
        // Two entries out of order: a valid tree, but not its canonical archive.
        let mut swapped = MAGIC.to_vec();
        swapped.extend_from_slice(&2u64.to_le_bytes());
        for name in [b"b", b"a"] {
            swapped.extend_from_slice(b"d\x01\0\0\0\0\0\0\0");
            swapped.extend_from_slice(name);
        }
        assert!(FileTree::from_archive(&swapped, 1 << 20).is_err());
    }
}
