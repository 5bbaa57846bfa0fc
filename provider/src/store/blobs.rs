//! Content-addressed blobs: every file the provider keeps (dataset files, algorithms, job
//! outputs, logs) is stored once under `<data>/blobs/`, named by the BLAKE3 of its contents,
//! and made read-only. Blobs are only ever opened through a capability handle on that
//! directory, by a name computed from a hash: never from a path a request supplied.
//!
//! In cluster mode the blobs live in an S3 bucket ([`super::s3`], key `blobs/ab/abcdef...`),
//! written once, and `<data>/blobs/` is this node's cache of them: a blob is fetched the first
//! time this node needs it (checked against its hash), then read, linked into dataset views
//! and served from the cache like a local one. So a worker fetches a dataset once, whatever
//! number of jobs read it. Every blob this node stores is in the bucket before the call that
//! stores it returns. The methods block (they run on the blocking pool, as every caller does
//! through [`crate::blocking`]); remote calls are driven from there on the runtime's handle.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use alloy_primitives::B256;
use cap_std::ambient_authority;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use cap_std::fs::Dir;

/// The blob store.
#[derive(Debug)]
pub struct Blobs {
    dir: Dir,
    tmp: PathBuf,
    remote: Option<Remote>,
}

/// The bucket of a cluster, and how to reach it from blocking code.
#[derive(Debug)]
struct Remote {
    s3: super::s3::S3,
    rt: tokio::runtime::Handle,
    /// Blobs fetched from the bucket into the cache (for tests and metrics).
    fetched: std::sync::atomic::AtomicU64,
}

/// `ab/abcdef…`: two levels, so no directory grows past 256 subdirectories' worth of files.
fn name(hash: &B256) -> String {
    let hex = hex::encode(hash);
    format!("{}/{hex}", &hex[..2])
}

impl Blobs {
    /// Opens the store under `data_dir` (creating it).
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(Self { dir: Dir::open_ambient_dir(&root, ambient_authority())?, tmp, remote: None })
    }

    /// Opens a cluster's store: the bucket `s3`, cached under `data_dir` (created). Must be
    /// called on the runtime.
    pub fn open_remote(data_dir: &Path, s3: super::s3::S3) -> io::Result<Self> {
        let mut blobs = Self::open(data_dir)?;
        let rt = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        blobs.remote = Some(Remote { s3, rt, fetched: Default::default() });
        Ok(blobs)
    }

    /// How many blobs this node fetched from the bucket.
    pub fn remote_fetches(&self) -> u64 {
        self.remote.as_ref().map_or(0, |r| r.fetched.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The bucket's key of a blob.
    fn key(hash: &B256) -> String {
        format!("blobs/{}", name(hash))
    }

    /// Cluster mode: makes sure the cached blob `hash` is in the bucket too.
    fn upload(&self, hash: &B256) -> io::Result<()> {
        let Some(remote) = &self.remote else { return Ok(()) };
        let path = self.cached_path(hash)?;
        remote.rt.block_on(remote.s3.put_file_once(&Self::key(hash), &path))?;
        Ok(())
    }

    /// The cached file of a blob (for uploading it).
    fn cached_path(&self, hash: &B256) -> io::Result<PathBuf> {
        // `Dir` gives no path; the store's root is `<data>/blobs`, beside `tmp`.
        let root = self.tmp.parent().ok_or_else(|| io::Error::other("the blob store has no root"))?.join("blobs");
        Ok(root.join(name(hash)))
    }

    /// Makes sure blob `hash` is in the cache, fetching it from the bucket if this node never
    /// had it (and checking that its contents hash to its name). `NotFound` if it exists
    /// nowhere.
    fn ensure_local(&self, hash: &B256) -> io::Result<()> {
        let Some(remote) = &self.remote else { return Ok(()) };
        if self.dir.is_file(name(hash)) {
            return Ok(());
        }
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp)?.into_temp_path();
        if !remote.rt.block_on(remote.s3.get_to_file(&Self::key(hash), &tmp))? {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("blob {hash} is not in the bucket")));
        }
        let (_, actual) = tidepool_runtime::tree::hash_reader(std::fs::File::open(&tmp)?)?;
        if actual != *hash {
            return Err(io::Error::other(format!("the bucket's blob {hash} holds other contents ({actual})")));
        }
        self.adopt_local(&tmp.keep().map_err(|e| e.error)?, hash)?;
        remote.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Removes what is left in the temporary directory (by a daemon killed while it wrote
    /// there): everything when `idle_for` is `None` (call before anything writes there), else
    /// only what nothing has modified for that long (in a cluster, other nodes sharing the
    /// directory may be writing there now). Returns how many entries were removed.
    pub fn clear_tmp(&self, idle_for: Option<std::time::Duration>) -> io::Result<usize> {
        let mut removed = 0;
        let now = std::time::SystemTime::now();
        for entry in std::fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if let Some(idle_for) = idle_for
                && now.duration_since(last_modified(&entry.path())?).unwrap_or_default() < idle_for
            {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// A temporary directory for files on their way into the store (same filesystem).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Is blob `hash` here (in a cluster: here or, fetched now, in the bucket)?
    pub fn contains(&self, hash: &B256) -> bool {
        self.dir.is_file(name(hash)) || (self.remote.is_some() && self.ensure_local(hash).is_ok())
    }

    /// Stores what `reader` yields, up to `limit` bytes; returns its hash and size, or
    /// `None` when it is longer than `limit` (nothing is stored then). A new blob is on disk
    /// (it and its directory entries fsynced) when this returns.
    pub fn put_reader(&self, reader: impl Read, limit: u64) -> io::Result<Option<(B256, u64)>> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        let copying = Copying { reader, copy: &mut tmp, left: limit };
        let (size, hash) = match tidepool_runtime::tree::hash_reader(copying) {
            Ok(hashed) => hashed,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<TooLong>()) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.keep(tmp, &hash)?;
        Ok(Some((hash, size)))
    }

    /// Stores `bytes`; returns their BLAKE3. Bytes the store holds already are not written
    /// again (a module run again, an empty log).
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<B256> {
        let hash = tidepool_runtime::tree::blake3_b256(bytes);
        if self.dir.is_file(name(&hash)) {
            // As `adopt` does for a blob it has: the bucket gets it if it lacks it.
            self.upload(&hash)?;
            return Ok(hash);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        tmp.write_all(bytes)?;
        self.keep(tmp, &hash)?;
        Ok(hash)
    }

    /// Moves `tmp`, whose BLAKE3 is `hash`, into the store (see [`adopt`](Self::adopt)).
    fn keep(&self, tmp: tempfile::NamedTempFile, hash: &B256) -> io::Result<()> {
        self.adopt(tmp.into_temp_path().keep().map_err(|e| e.error)?.as_path(), hash)
    }

    /// Moves the file at `path` (whose BLAKE3 the caller computed as `hash`) into the store.
    /// If the blob exists already, the file is removed instead. A new blob is on disk when this
    /// returns: the file, the rename and a directory it made fsynced.
    pub fn adopt(&self, path: &Path, hash: &B256) -> io::Result<()> {
        if self.adopt_local(path, hash)? {
            let path = self.cached_path(hash)?;
            for dir in path.ancestors().skip(1).take(2) {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        self.upload(hash)
    }

    /// [`adopt`](Self::adopt) into this node's directory only; true when the blob is new (its
    /// file synced, its directories not yet).
    fn adopt_local(&self, path: &Path, hash: &B256) -> io::Result<bool> {
        let target = name(hash);
        if self.dir.is_file(&target) {
            std::fs::remove_file(path)?;
            return Ok(false);
        }
        self.dir.create_dir_all(&target[..2])?;
        // The file itself, never what a symlink (a job's output, say) points at.
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!("{} is not a plain file", path.display())));
        }
        file.sync_all()?;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
        let parent = path.parent().unwrap_or(Path::new("."));
        let from = Dir::open_ambient_dir(parent, ambient_authority())?;
        let file_name = path.file_name().ok_or_else(|| io::Error::other("not a file path"))?;
        match from.rename(file_name, &self.dir, &target) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(18 /* EXDEV */) => {
                // Another file system: copy into the store's, and remove the original only
                // once the copy is in place.
                let mut dst = tempfile::NamedTempFile::new_in(&self.tmp)?;
                io::copy(&mut &file, &mut dst)?;
                let kept = dst.into_temp_path().keep().map_err(|e| e.error)?;
                let new = self.adopt_local(&kept, hash)?;
                std::fs::remove_file(path)?;
                Ok(new)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, hash: &B256) -> io::Result<std::fs::File> {
        self.ensure_local(hash)?;
        Ok(self.dir.open(name(hash))?.into_std())
    }

    /// A blob's content (fetched from the bucket first in a cluster, when not cached).
    pub fn read(&self, hash: &B256) -> io::Result<Vec<u8>> {
        self.ensure_local(hash)?;
        self.dir.read(name(hash))
    }

    /// Every blob in this node's directory, and how many of its files are not named as blobs
    /// are (left alone by whoever asks).
    pub fn stored(&self) -> io::Result<(Vec<StoredBlob>, usize)> {
        let (mut blobs, mut foreign) = (Vec::new(), 0);
        for shard in self.dir.entries()? {
            let shard = shard?;
            let shard_name = shard.file_name().into_string().unwrap_or_default();
            if !shard.file_type()?.is_dir() {
                foreign += 1;
                continue;
            }
            for entry in shard.open_dir()?.entries()? {
                let entry = entry?;
                let file = entry.file_name().into_string().unwrap_or_default();
                let hash = file.parse::<B256>().ok().filter(|h| name(h) == format!("{shard_name}/{file}"));
                match hash {
                    Some(hash) if entry.file_type()?.is_file() => {
                        let meta = entry.metadata()?;
                        blobs.push(StoredBlob { hash, size: meta.len(), modified: meta.modified()?.into_std() });
                    }
                    _ => foreign += 1,
                }
            }
        }
        Ok((blobs, foreign))
    }

    /// Removes a blob from this node's directory (in a cluster, not from the bucket).
    pub fn remove(&self, hash: &B256) -> io::Result<()> {
        self.dir.remove_file(name(hash))
    }

    /// Hard-links a blob to `dest/relative` (creating parents): how dataset views are built.
    pub fn link_into(&self, hash: &B256, dest: &Dir, relative: &str) -> io::Result<()> {
        if let Some((parent, _)) = relative.rsplit_once('/') {
            dest.create_dir_all(parent)?;
        }
        self.ensure_local(hash)?;
        self.dir.hard_link(name(hash), dest, relative)
    }
}

/// The latest modification time of `path` or of anything under it (symlinks not followed).
fn last_modified(path: &Path) -> io::Result<std::time::SystemTime> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut latest = meta.modified()?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            latest = latest.max(last_modified(&entry?.path())?);
        }
    }
    Ok(latest)
}

/// A blob as [`Blobs::stored`] finds it.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    /// Its BLAKE3, its name.
    pub hash: B256,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored.
    pub modified: std::time::SystemTime,
}

/// A reader that writes what it reads to `copy`, and fails with [`TooLong`] once more than
/// `left` bytes went through.
struct Copying<'a, R, W> {
    reader: R,
    copy: &'a mut W,
    left: u64,
}

#[derive(Debug)]
struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("longer than allowed")
    }
}

impl std::error::Error for TooLong {}

impl<R: Read, W: Write> Read for Copying<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| io::Error::other(TooLong))?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_temporary_files_go_and_recent_ones_stay_unless_all_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(tmp.path()).unwrap();
        let dir = blobs.tmp_dir().to_path_buf();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let age = |path: &Path| std::fs::File::open(path).unwrap().set_modified(long_ago).unwrap();
        std::fs::write(dir.join("abandoned"), b"x").unwrap();
        age(&dir.join("abandoned"));
        std::fs::write(dir.join("uploading"), b"x").unwrap();
        // A directory counts as recent when anything in it is.
        std::fs::create_dir_all(dir.join("staging/a")).unwrap();
        std::fs::write(dir.join("staging/a/part"), b"x").unwrap();
        for old in ["staging/a", "staging"] {
            age(&dir.join(old));
        }
        std::fs::create_dir_all(dir.join("stale/b")).unwrap();
        std::fs::write(dir.join("stale/b/part"), b"x").unwrap();
        for old in ["stale/b/part", "stale/b", "stale"] {
            age(&dir.join(old));
        }
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(blobs.clear_tmp(Some(hour)).unwrap(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["staging", "uploading"]);
        assert_eq!(blobs.clear_tmp(None).unwrap(), 2);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn blobs_are_stored_once_by_content_and_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(tmp.path()).unwrap();
        let a = blobs.put_bytes(b"hello").unwrap();
        assert_eq!(a, B256::from(*blake3::hash(b"hello").as_bytes()));
        assert_eq!(blobs.put_bytes(b"hello").unwrap(), a, "the same content, the same blob");
        // Bytes the store has are not written again: without its temporary directory, the
        // store still takes them, and nothing new.
        std::fs::remove_dir(blobs.tmp_dir()).unwrap();
        assert_eq!(blobs.put_bytes(b"hello").unwrap(), a);
        assert!(blobs.put_bytes(b"new").is_err(), "new bytes go through the temporary directory");
        std::fs::create_dir(blobs.tmp_dir()).unwrap();
        assert_eq!(blobs.read(&a).unwrap(), b"hello");
        let path = tmp.path().join("blobs").join(name(&a));
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        assert!(blobs.put_reader(&b"0123456789"[..], 5).unwrap().is_none(), "over the limit");
        assert_eq!(blobs.put_reader(&b"0123456789"[..], 10).unwrap().map(|(_, n)| n), Some(10), "at the limit");
        assert_eq!(std::fs::read_dir(blobs.tmp_dir()).unwrap().count(), 0, "nothing left in tmp");
        let view = tmp.path().join("view");
        std::fs::create_dir(&view).unwrap();
        let view_dir = Dir::open_ambient_dir(&view, ambient_authority()).unwrap();
        blobs.link_into(&a, &view_dir, "sub/greeting.txt").unwrap();
        assert_eq!(std::fs::read(view.join("sub/greeting.txt")).unwrap(), b"hello");
    }

    #[test]
    fn adopting_a_symlink_is_refused_and_what_it_points_at_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(tmp.path()).unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "not the job's").unwrap();
        let link = tmp.path().join("output");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let hash = tidepool_runtime::tree::blake3_b256(b"not the job's");
        assert!(blobs.adopt(&link, &hash).is_err());
        assert!(!blobs.contains(&hash));
        assert!(!std::fs::metadata(&secret).unwrap().permissions().readonly(), "the target was not touched");
        // A plain file is adopted, and removed from where it was.
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "not the job's").unwrap();
        blobs.adopt(&plain, &hash).unwrap();
        assert!(blobs.contains(&hash) && !plain.exists());
    }
}
