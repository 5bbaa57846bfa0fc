//! Streamed uploads (modules, dataset files) that write nothing to disk for a stranger.
//!
//! A signed upload carries the keccak-256 of its body in `x-tidepool-content-hash`, and its
//! signature covers that hash. So, before a byte of the body is read:
//!
//! 1. the declared `Content-Length` is checked against the limit (413 at once);
//! 2. the signature over the *claimed* hash is verified and the nonce recorded (401, 409);
//! 3. the caller gets an upload slot: at most `max_concurrent_uploads` at once (503 beyond),
//!    at most `max_uploads_per_address` of them one address's, at most
//!    `upload_bytes_per_address_per_hour` bytes an hour from one address and at most
//!    `upload_bytes_per_peer_per_hour` from one peer, whatever addresses sign them (429
//!    beyond).
//!
//! Only then is the body streamed into a temporary file (or, for a module the caller reads
//! whole, into memory up to 1 MiB), bounded by the limit, and hashed; a body that stalls (the
//! body idle timeout), grows past the limit or does not hash to what was signed is refused and
//! its temporary file removed at once.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use alloy_primitives::{Address, B256, Keccak256};
use axum::Extension;
use axum::body::Body;
use axum::http::HeaderMap;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Api;
use super::error::{ApiError, ApiResult};
use super::extract::Envelope;
use super::guard::{Peer, body_error};
use super::quota::{Quotas, Ticket};
use crate::protocol::signing::{AuthError, HEADER_CONTENT_HASH};

/// Bounds on uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    /// Uploads being received at once, from everyone.
    pub max_concurrent: usize,
    /// Uploads being received at once from one address (0: no bound).
    pub max_per_address: usize,
    /// Bytes one address may upload per hour (0: no bound).
    pub bytes_per_address_per_hour: u64,
    /// Bytes one peer (an IP address; an IPv6 /64) may upload per hour, whatever addresses
    /// sign them (0: no bound): addresses cost nothing to make.
    pub bytes_per_peer_per_hour: u64,
}

/// The upload slots and the quotas per address and per peer.
#[derive(Debug)]
pub struct UploadGate {
    slots: Arc<Semaphore>,
    per_address: Arc<Quotas<Address>>,
    per_peer: Arc<Quotas<IpAddr>>,
}

/// The peer an upload quota counts: the IP address, or for IPv6 its /64 (one subscriber's
/// network, where a host picks addresses at will).
fn quota_peer(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// An upload's slot, given back when dropped.
#[derive(Debug)]
pub struct UploadSlot {
    /// The address's and the peer's counts (none where there is no bound to count against).
    by_address: Option<Ticket<Address>>,
    by_peer: Option<Ticket<IpAddr>>,
    _slot: OwnedSemaphorePermit,
}

impl UploadGate {
    /// A gate with `limits`.
    pub fn new(limits: UploadLimits) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            per_address: Quotas::new("address", "uploads", limits.max_per_address, limits.bytes_per_address_per_hour),
            per_peer: Quotas::new("peer", "uploads", 0, limits.bytes_per_peer_per_hour),
        })
    }

    /// A slot for an upload by `address` from `peer` (when known) of `declared` bytes (when
    /// known).
    pub fn enter(&self, address: Address, peer: Option<IpAddr>, declared: Option<u64>) -> ApiResult<UploadSlot> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| ApiError::overloaded("uploads"))?;
        let declared = declared.unwrap_or(0);
        let peer = peer.map(quota_peer);
        // Refused for the peer, the address's ticket goes back as this returns.
        let by_address = self.per_address.enter(address, declared)?;
        let by_peer = match peer {
            Some(ip) => self.per_peer.enter(ip, declared)?,
            None => None,
        };
        Ok(UploadSlot { by_address, by_peer, _slot: slot })
    }
}

impl UploadSlot {
    /// Counts `n` more bytes against the uploader's and its peer's hourly quotas.
    fn charge(&self, n: u64) -> ApiResult<()> {
        if let Some(t) = &self.by_address {
            t.charge(n)?;
        }
        match &self.by_peer {
            Some(t) => t.charge(n),
            None => Ok(()),
        }
    }
}

/// The declared `Content-Length`, refused with a 413 when over `limit` (before any byte of the
/// body is read).
pub fn check_declared_length(headers: &HeaderMap, limit: u64) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(axum::http::header::CONTENT_LENGTH) else { return Ok(None) };
    let declared: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".into()))?;
    if declared > limit {
        return Err(ApiError::TooLarge(format!("the body is {declared} bytes, over its {limit}-byte limit")));
    }
    Ok(Some(declared))
}

/// A body received into a temporary file, hashed, and checked against its signature.
#[derive(Debug)]
pub struct Received {
    /// The signer.
    pub who: Address,
    /// The body, in a temporary file (removed when dropped).
    pub file: tempfile::TempPath,
    /// Its size in bytes.
    pub size: u64,
    /// Its BLAKE3.
    pub blake3: B256,
}

/// A body received into memory, checked against its signature.
#[derive(Debug)]
pub struct ReceivedBytes {
    /// The signer.
    pub who: Address,
    /// The body.
    pub bytes: Vec<u8>,
}

/// An upload whose signature and quota are checked, and whose body is not read yet.
#[derive(Debug)]
pub struct Authorized {
    /// The signer.
    pub who: Address,
    claimed: B256,
    limit: u64,
    slot: UploadSlot,
}

/// Authenticates a streamed upload from its headers alone and gives it an upload slot (steps
/// 1 to 3 of the module).
pub async fn authorize(
    api: &Arc<Api>,
    envelope: &Envelope,
    peer: Option<Extension<Peer>>,
    headers: &HeaderMap,
    limit: u64,
) -> ApiResult<Authorized> {
    let declared = check_declared_length(headers, limit)?;
    let claimed = envelope.envelope.content_hash.ok_or(AuthError::Missing(HEADER_CONTENT_HASH))?;
    let who = api.auth.authorize(envelope, claimed).await?;
    let slot = api.uploads.enter(who, peer.map(|Extension(Peer(ip))| ip), declared)?;
    Ok(Authorized { who, claimed, limit, slot })
}

/// Bodies up to this size are held in memory by [`Authorized::receive_bytes`]; a longer one
/// goes on in a temporary file, so that an upload slot holds at most this much memory.
const IN_MEMORY: usize = 1 << 20;

/// Where a body is being received.
enum Spool {
    Memory(Vec<u8>),
    File(tempfile::TempPath, tokio::fs::File),
}

impl Spool {
    /// A temporary file in `dir`.
    async fn file(dir: &Path) -> std::io::Result<(tempfile::TempPath, tokio::fs::File)> {
        let tmp = tempfile::NamedTempFile::new_in(dir)?.into_temp_path();
        let file = tokio::fs::File::create(&tmp).await?;
        Ok((tmp, file))
    }

    /// Appends `chunk`; memory past [`IN_MEMORY`] bytes goes on in a temporary file in `dir`.
    async fn write(&mut self, dir: &Path, chunk: &[u8]) -> std::io::Result<()> {
        if let Self::Memory(held) = self
            && held.len() + chunk.len() > IN_MEMORY
        {
            let held = std::mem::take(held);
            let (tmp, mut file) = Self::file(dir).await?;
            file.write_all(&held).await?;
            *self = Self::File(tmp, file);
        }
        match self {
            Self::Memory(held) => held.extend_from_slice(chunk),
            Self::File(_, file) => file.write_all(chunk).await?,
        }
        Ok(())
    }
}

impl Authorized {
    /// Receives the body into a temporary file (removed if anything fails), checking its size
    /// and that it hashes to what was signed.
    pub async fn receive(self, api: &Arc<Api>, body: Body) -> ApiResult<Received> {
        let who = self.who;
        let (tmp, file) = Spool::file(api.assets.upload_dir()).await?;
        let (spool, size, blake3) = self.stream(api, body, Spool::File(tmp, file)).await?;
        let Spool::File(tmp, mut file) = spool else { unreachable!("a file spool stays a file") };
        // tokio's `sync_all` does not report a failed last write (the disk full, say): `flush`
        // waits for it and does.
        file.flush().await?;
        file.sync_all().await?;
        Ok(Received { who, file: tmp, size, blake3 })
    }

    /// Receives the body into memory, checking its size and that it hashes to what was
    /// signed: for bodies the caller reads whole (a module). A body over [`IN_MEMORY`] bytes
    /// is received into a temporary file, read back once it is checked.
    pub async fn receive_bytes(self, api: &Arc<Api>, body: Body) -> ApiResult<ReceivedBytes> {
        let who = self.who;
        let bytes = match self.stream(api, body, Spool::Memory(Vec::new())).await?.0 {
            Spool::Memory(bytes) => bytes,
            Spool::File(tmp, mut file) => {
                file.flush().await?;
                drop(file);
                tokio::fs::read(&tmp).await?
            }
        };
        Ok(ReceivedBytes { who, bytes })
    }

    /// Streams the body into `spool`, bounded by the limit and the address's quota; returns
    /// the spool, the size and the BLAKE3 once the body hashes to what was signed.
    async fn stream(&self, api: &Arc<Api>, body: Body, mut spool: Spool) -> ApiResult<(Spool, u64, B256)> {
        let limit = self.limit;
        let (mut keccak, mut blake) = (Keccak256::new(), blake3::Hasher::new());
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(body_error)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::TooLarge(format!("the body is over its {limit}-byte limit")));
            }
            self.slot.charge(chunk.len() as u64)?;
            keccak.update(&chunk);
            blake.update(&chunk);
            spool.write(api.assets.upload_dir(), &chunk).await?;
        }
        let actual = keccak.finalize();
        if actual != self.claimed {
            return Err(AuthError::BodyMismatch { signed: self.claimed, actual }.into());
        }
        Ok((spool, size, B256::from(*blake.finalize().as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_held_in_memory_up_to_its_bound_then_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let mut spool = Spool::Memory(Vec::new());
        let chunk: Vec<u8> = (0..IN_MEMORY / 2 + 1).map(|i| i as u8).collect();
        spool.write(dir.path(), &chunk).await.unwrap();
        assert!(matches!(spool, Spool::Memory(ref held) if held == &chunk));
        assert_eq!(files(), 0, "nothing on disk yet");
        spool.write(dir.path(), &chunk).await.unwrap();
        spool.write(dir.path(), b"end").await.unwrap();
        let Spool::File(path, mut file) = spool else { panic!("past the bound, the body goes on in a file") };
        file.flush().await.unwrap();
        let expected = [chunk.clone(), chunk, b"end".to_vec()].concat();
        assert_eq!(std::fs::read(&path).unwrap(), expected, "all of it, in order");
        drop(path);
        assert_eq!(files(), 0, "the temporary file goes with the spool");
    }

    #[test]
    fn uploads_are_bounded_at_once_per_address_and_per_hour() {
        let gate = UploadGate::new(UploadLimits {
            max_concurrent: 3,
            max_per_address: 2,
            bytes_per_address_per_hour: 100,
            bytes_per_peer_per_hour: 0,
        });
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let first = gate.enter(a, None, Some(10)).unwrap();
        let _second = gate.enter(a, None, None).unwrap();
        assert_eq!(gate.enter(a, None, None).unwrap_err().status(), 429, "a third from one address");
        let _third = gate.enter(b, None, None).unwrap();
        assert_eq!(gate.enter(Address::repeat_byte(3), None, None).unwrap_err().status(), 503, "no slot left");
        drop(first);
        let again = gate.enter(a, None, None).unwrap();
        again.charge(60).unwrap();
        assert_eq!(again.charge(60).unwrap_err().status(), 429, "over the hourly bytes");
        drop(again);
        assert_eq!(gate.enter(b, None, Some(101)).unwrap_err().status(), 429, "a declared length over the quota");

        // 0: no bound per address, only the slots.
        let open = UploadGate::new(UploadLimits {
            max_concurrent: 3,
            max_per_address: 0,
            bytes_per_address_per_hour: 0,
            bytes_per_peer_per_hour: 0,
        });
        let all: Vec<_> = (0..3).map(|_| open.enter(a, None, None).unwrap()).collect();
        assert_eq!(open.enter(a, None, None).unwrap_err().status(), 503, "the slots still bound it");
        drop(all);
    }

    #[test]
    fn a_peer_is_bounded_whatever_addresses_sign_its_uploads() {
        let gate = UploadGate::new(UploadLimits {
            max_concurrent: 8,
            max_per_address: 2,
            bytes_per_address_per_hour: 0,
            bytes_per_peer_per_hour: 100,
        });
        let peer: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let one = gate.enter(Address::repeat_byte(1), Some(peer), None).unwrap();
        one.charge(60).unwrap();
        drop(one);
        // A new address from the same /64 shares its budget; another /64 does not.
        let two = gate.enter(Address::repeat_byte(2), Some(neighbour), None).unwrap();
        let err = two.charge(60).unwrap_err();
        assert_eq!(err.status(), 429);
        assert!(err.to_string().contains("for this peer"), "{err}");
        assert_eq!(gate.enter(Address::repeat_byte(3), Some(peer), Some(50)).unwrap_err().status(), 429);
        let three = gate.enter(Address::repeat_byte(3), Some(elsewhere), Some(50)).unwrap();
        three.charge(50).unwrap();
        // A refusal for the peer leaves the address's count as it was.
        drop((two, three));
        assert_eq!(gate.per_address.in_progress(), 0);
        assert_eq!(gate.per_peer.in_progress(), 0);
    }
}
