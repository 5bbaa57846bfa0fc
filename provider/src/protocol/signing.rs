//! Signatures: who sent a request, and who signed a piece of typed data.
//!
//! Every consumer request carries an envelope in five headers: the signer's address, a nonce, an
//! expiry (Unix seconds), the keccak-256 of the body, and an EIP-712 signature over
//! [`Request`](super::eip712::Request): method, path (with query), keccak-256 of the body,
//! nonce, expiry. The server recovers the signer from the signature and requires it to match
//! the address header, the expiry to be in the future, and the nonce to be greater than the last
//! one it accepted from that address (checked and recorded atomically), so a replayed or altered
//! request is refused. The body's hash travels in a header of its own so that the server can
//! check the signature *before* it accepts a byte of a large body, then check that the body
//! hashes to what was signed.
//!
//! Nonces and expiries are at most [`MAX_COUNTER`] (2^63 - 1, what a signed 64-bit column
//! holds); signatures must be in the lower half of the curve order (EIP-2), so a signature
//! cannot be malleated into a second valid one.
//!
//! Keys, hashing and signature recovery are alloy's; signing is libsecp256k1's (the library
//! alloy recovers with), which makes the signatures alloy's signer does; nothing here is
//! hand-written crypto.

use alloy_primitives::{Address, B256, Signature, keccak256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct};
use zeroize::Zeroize;

use super::eip712::Request;

/// The signer's address, as it claims (checked against the recovered one).
pub const HEADER_ADDRESS: &str = "x-tidepool-address";
/// The nonce: greater than the last one the server accepted from the address.
pub const HEADER_NONCE: &str = "x-tidepool-nonce";
/// When the signature expires (Unix seconds).
pub const HEADER_EXPIRY: &str = "x-tidepool-expiry";
/// The EIP-712 signature over the request (65 bytes, 0x-hex).
pub const HEADER_SIGNATURE: &str = "x-tidepool-signature";
/// The keccak-256 of the body, as signed (`contentHash`).
pub const HEADER_CONTENT_HASH: &str = "x-tidepool-content-hash";

/// The largest nonce and expiry accepted: 2^63 - 1.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header (or, for a receipt, the provider's signature) is absent.
    #[error("the request is not signed: header `{0}` is missing")]
    Missing(&'static str),
    /// A header does not parse (address, number, hash or signature).
    #[error("header `{header}` is malformed: {reason}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The expiry is not in the future.
    #[error("the signature expired at {expiry} (now {now})")]
    Expired {
        /// The signed expiry (Unix seconds).
        expiry: u64,
        /// The server's time (Unix seconds).
        now: u64,
    },
    /// The signature recovers to another address than the claimed one.
    #[error("the signature was made by {recovered}, not by {claimed}")]
    WrongSigner {
        /// The address the request claims.
        claimed: Address,
        /// The address that signed.
        recovered: Address,
    },
    /// The signature recovers to no address, or is a malleated (high-`s`) one.
    #[error("the signature is not a valid secp256k1 signature: {0}")]
    Invalid(String),
    /// A well-formed header whose value is out of the accepted range (a 400, not a 401).
    #[error("header `{header}` is out of range: {reason}")]
    OutOfRange {
        /// The header.
        header: &'static str,
        /// What is out of range.
        reason: String,
    },
    /// The body is not the one signed (its keccak-256 differs from the content-hash header).
    #[error("the body does not hash to the signed content hash {signed} (it hashes to {actual})")]
    BodyMismatch {
        /// The signed content hash.
        signed: B256,
        /// The keccak-256 of the body received.
        actual: B256,
    },
}

/// A signed request's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The signer's address.
    pub address: Address,
    /// The request's nonce (at most [`MAX_COUNTER`]).
    pub nonce: u64,
    /// When the signature expires (Unix seconds, at most [`MAX_COUNTER`]).
    pub expiry: u64,
    /// The keccak-256 of the body the sender signed, when the header is sent (clients always
    /// send it; a streamed upload requires it).
    pub content_hash: Option<B256>,
    /// The EIP-712 signature over the [`Request`].
    pub signature: Signature,
}

impl Envelope {
    /// Signs a request as `signer`.
    pub fn sign(
        signer: &PrivateKeySigner,
        domain: &Eip712Domain,
        method: &str,
        path: &str,
        body: &[u8],
        nonce: u64,
        expiry: u64,
    ) -> Self {
        Self::sign_hash(signer, domain, method, path, keccak256(body), nonce, expiry)
    }

    /// Signs a request whose body hashes (keccak-256) to `content_hash`.
    pub fn sign_hash(
        signer: &PrivateKeySigner,
        domain: &Eip712Domain,
        method: &str,
        path: &str,
        content_hash: B256,
        nonce: u64,
        expiry: u64,
    ) -> Self {
        let request = request(method, path, content_hash, nonce, expiry);
        Self {
            address: signer.address(),
            nonce,
            expiry,
            content_hash: Some(content_hash),
            signature: sign_typed(signer, domain, &request),
        }
    }

    /// The envelope's headers, to attach to a request.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (HEADER_ADDRESS, self.address.to_string()),
            (HEADER_NONCE, self.nonce.to_string()),
            (HEADER_EXPIRY, self.expiry.to_string()),
            (HEADER_SIGNATURE, self.signature.to_string()),
        ];
        if let Some(hash) = self.content_hash {
            headers.push((HEADER_CONTENT_HASH, hash.to_string()));
        }
        headers
    }

    /// Reads an envelope from request headers (`get` returns a header's value).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let header = |name: &'static str| get(name).ok_or(AuthError::Missing(name));
        let malformed = |header: &'static str, reason: String| AuthError::Malformed { header, reason };
        let counter = |name: &'static str| -> Result<u64, AuthError> {
            let value: u64 = header(name)?.parse().map_err(|e| malformed(name, format!("{e}")))?;
            if value > MAX_COUNTER {
                return Err(AuthError::OutOfRange { header: name, reason: format!("{value} is over 2^63 - 1") });
            }
            Ok(value)
        };
        let address = header(HEADER_ADDRESS)?.parse().map_err(|e| malformed(HEADER_ADDRESS, format!("{e}")))?;
        let nonce = counter(HEADER_NONCE)?;
        let expiry = counter(HEADER_EXPIRY)?;
        let signature = header(HEADER_SIGNATURE)?.parse().map_err(|e| malformed(HEADER_SIGNATURE, format!("{e}")))?;
        let content_hash = match get(HEADER_CONTENT_HASH) {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| malformed(HEADER_CONTENT_HASH, format!("{e}")))?),
        };
        Ok(Self { address, nonce, expiry, content_hash, signature })
    }

    /// Checks the expiry and that the signature over this request is the claimed address's.
    /// The nonce is checked by the caller, against its records.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        method: &str,
        path: &str,
        content_hash: B256,
        now: u64,
    ) -> Result<(), AuthError> {
        if self.expiry <= now {
            return Err(AuthError::Expired { expiry: self.expiry, now });
        }
        if let Some(signed) = self.content_hash.filter(|signed| *signed != content_hash) {
            return Err(AuthError::BodyMismatch { signed, actual: content_hash });
        }
        let request = request(method, path, content_hash, self.nonce, self.expiry);
        let recovered = recover_typed(domain, &request, &self.signature)?;
        if recovered != self.address {
            return Err(AuthError::WrongSigner { claimed: self.address, recovered });
        }
        Ok(())
    }
}

fn request(method: &str, path: &str, content_hash: B256, nonce: u64, expiry: u64) -> Request {
    Request { method: method.to_ascii_uppercase(), path: path.to_string(), contentHash: content_hash, nonce, expiry }
}

/// Signs typed data under `domain`.
pub fn sign_typed<T: SolStruct>(signer: &PrivateKeySigner, domain: &Eip712Domain, value: &T) -> Signature {
    sign_prehash(signer, &value.eip712_signing_hash(domain))
}

/// Signs a 32-byte hash with a local key: the very signature alloy's signer makes (RFC 6979
/// nonce, low `s`, recovery id), made by libsecp256k1, which alloy already uses to recover
/// signatures, instead of the signer's pure-Rust k256 (a consumer signs every request; this
/// is about three times quicker).
fn sign_prehash(signer: &PrivateKeySigner, hash: &B256) -> Signature {
    let mut secret: [u8; 32] = signer.credential().to_bytes().into();
    // A signer's key is a valid secret key: this cannot fail.
    let mut key = secp256k1::SecretKey::from_byte_array(secret).expect("a signing key is a secret key");
    secret.zeroize();
    let signed = secp256k1::SECP256K1.sign_ecdsa_recoverable(secp256k1::Message::from_digest(hash.0), &key);
    key.non_secure_erase();
    let (id, bytes) = signed.serialize_compact();
    // The recovery id's low bit is the parity of the nonce point's y.
    Signature::from_bytes_and_parity(&bytes, i32::from(id) & 1 == 1)
}

/// The address that signed `value` under `domain`. A signature whose `s` is in the upper half
/// of the curve order is refused (EIP-2): it is the malleated twin of a valid one.
pub fn recover_typed<T: SolStruct>(
    domain: &Eip712Domain,
    value: &T,
    signature: &Signature,
) -> Result<Address, AuthError> {
    recover_prehash(signature, &value.eip712_signing_hash(domain))
}

/// The address that signed `hash`, refusing high-`s` signatures.
fn recover_prehash(signature: &Signature, hash: &B256) -> Result<Address, AuthError> {
    if signature.normalize_s().is_some() {
        return Err(AuthError::Invalid("s is in the upper half of the curve order (a malleated signature)".into()));
    }
    signature.recover_address_from_prehash(hash).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Signs a receipt as the provider: EIP-712 typed data (`primaryType: Receipt`) under
/// `domain`, added to the receipt's (unhashed) `signatures`.
pub fn sign_receipt(signer: &PrivateKeySigner, domain: &Eip712Domain, receipt: &mut tidepool_runtime::Receipt) {
    let signature = sign_prehash(signer, &receipt.eip712_signing_hash(domain));
    receipt.signatures.push(tidepool_runtime::receipt::ReceiptSignature {
        signer: signer.address().to_string(),
        scheme: "eip712".into(),
        signature: signature.to_string(),
        domain: serde_json::to_value(domain).ok(),
    });
}

/// Checks that `receipt` carries a valid EIP-712 signature by `provider` under `domain`, over
/// exactly its hashed fields.
pub fn verify_receipt_signature(
    receipt: &tidepool_runtime::Receipt,
    provider: Address,
    domain: &Eip712Domain,
) -> Result<(), AuthError> {
    let sig = receipt
        .signatures
        .iter()
        .find(|s| s.scheme == "eip712" && s.signer.parse::<Address>().ok() == Some(provider))
        .ok_or(AuthError::Missing("receipt signature by the provider"))?;
    let signature: Signature =
        sig.signature.parse().map_err(|e| AuthError::Malformed { header: "signature", reason: format!("{e}") })?;
    let recovered = recover_prehash(&signature, &receipt.eip712_signing_hash(domain))?;
    if recovered != provider {
        return Err(AuthError::WrongSigner { claimed: provider, recovered });
    }
    Ok(())
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::eip712::domain;

    fn key(n: u8) -> PrivateKeySigner {
        PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap()
    }

    #[test]
    fn signatures_are_those_alloys_signer_makes() {
        use alloy_signer::SignerSync;
        for n in 1..=40u8 {
            let signer = if n % 2 == 0 { key(n) } else { PrivateKeySigner::random() };
            let hash = keccak256([n]);
            let ours = sign_prehash(&signer, &hash);
            assert_eq!(ours, signer.sign_hash_sync(&hash).unwrap(), "key {n}");
            assert_eq!(recover_prehash(&ours, &hash).unwrap(), signer.address());
        }
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let (alice, d) = (key(1), domain(1337, Address::repeat_byte(9)));
        let env = Envelope::sign(&alice, &d, "post", "/api/v1/x?y=1", b"{}", 7, 2_000);
        let body = keccak256(b"{}");
        env.verify(&d, "POST", "/api/v1/x?y=1", body, 1_000).unwrap();
        // Round trip through headers.
        let headers = env.headers();
        let parsed =
            Envelope::from_headers(|n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str())).unwrap();
        assert_eq!(parsed, env);
        // Anything changed breaks it.
        let wrong = |r: Result<(), AuthError>| assert!(matches!(r, Err(AuthError::WrongSigner { .. })), "{r:?}");
        wrong(env.verify(&d, "POST", "/api/v1/x?y=2", body, 1_000));
        wrong(env.verify(&d, "GET", "/api/v1/x?y=1", body, 1_000));
        // Without the content hash header, another body is simply another signed message.
        let bare = Envelope { content_hash: None, ..env.clone() };
        wrong(bare.verify(&d, "POST", "/api/v1/x?y=1", keccak256(b"{ }"), 1_000));
        wrong(env.verify(&domain(1, Address::repeat_byte(9)), "POST", "/api/v1/x?y=1", body, 1_000));
        wrong(Envelope { nonce: 8, ..env.clone() }.verify(&d, "POST", "/api/v1/x?y=1", body, 1_000));
        wrong(Envelope { address: key(2).address(), ..env.clone() }.verify(&d, "POST", "/api/v1/x?y=1", body, 1_000));
        assert!(matches!(env.verify(&d, "POST", "/api/v1/x?y=1", body, 2_000), Err(AuthError::Expired { .. })));
        // A body other than the one whose hash was sent.
        let r = env.verify(&d, "POST", "/api/v1/x?y=1", keccak256(b"[]"), 1_000);
        assert!(matches!(r, Err(AuthError::BodyMismatch { .. })), "{r:?}");
    }

    #[test]
    fn a_malleated_high_s_signature_is_refused() {
        let (alice, d) = (key(1), domain(1337, Address::repeat_byte(9)));
        let env = Envelope::sign(&alice, &d, "GET", "/api/v1/x", b"", 7, 2_000);
        let s = env.signature.s();
        let order = alloy_primitives::U256::from_be_bytes(alloy_primitives::hex!(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
        ));
        // (r, n - s, !v) recovers the same key: the twin of a valid signature.
        let twin = Signature::new(env.signature.r(), order - s, !env.signature.v());
        assert_eq!(
            twin.recover_address_from_prehash(
                &request("GET", "/api/v1/x", keccak256(b""), 7, 2_000).eip712_signing_hash(&d)
            )
            .unwrap(),
            alice.address(),
            "the twin is a valid ECDSA signature"
        );
        let malleated = Envelope { signature: twin, ..env.clone() };
        let r = malleated.verify(&d, "GET", "/api/v1/x", keccak256(b""), 1_000);
        assert!(matches!(r, Err(AuthError::Invalid(_))), "{r:?}");
        env.verify(&d, "GET", "/api/v1/x", keccak256(b""), 1_000).unwrap();
    }

    #[test]
    fn nonces_and_expiries_over_2_pow_63_are_out_of_range() {
        let (alice, d) = (key(1), domain(1337, Address::repeat_byte(9)));
        for (nonce, expiry, header) in [(1u64 << 63, 10, HEADER_NONCE), (1, u64::MAX, HEADER_EXPIRY)] {
            let env = Envelope::sign(&alice, &d, "GET", "/", b"", nonce, expiry);
            let headers = env.headers();
            let r = Envelope::from_headers(|n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()));
            assert!(matches!(r, Err(AuthError::OutOfRange { header: h, .. }) if h == header), "{r:?}");
        }
    }

    #[test]
    fn receipts_are_signed_over_their_hashed_fields() {
        let (provider, d) = (key(3), domain(1337, key(3).address()));
        let mut receipt: tidepool_runtime::Receipt = serde_json::from_value(serde_json::json!({
            "version": 1, "receipt_hash": B256::ZERO, "algorithm_hash": B256::ZERO, "algorithm_name": "a",
            "args": [], "inputs": [], "outputs_root": B256::ZERO, "stdout_hash": B256::ZERO, "stdout_len": 0,
            "stderr_hash": B256::ZERO, "stderr_len": 0, "outcome": {"kind": "exited", "code": 0},
            "fuel_consumed": 5, "limits": tidepool_runtime::Limits::default(),
            "runtime": {"tidepool_version": "0", "wasmtime_version": "0", "engine_config_hash": B256::ZERO},
            "seed": B256::ZERO, "deterministic": true
        }))
        .unwrap();
        receipt = receipt.seal();
        sign_receipt(&provider, &d, &mut receipt);
        verify_receipt_signature(&receipt, provider.address(), &d).unwrap();
        assert!(verify_receipt_signature(&receipt, key(4).address(), &d).is_err(), "another provider");
        assert!(verify_receipt_signature(&receipt, provider.address(), &domain(1, provider.address())).is_err());
        let mut forged = receipt.clone();
        forged.fuel_consumed = 1;
        assert!(matches!(
            verify_receipt_signature(&forged, provider.address(), &d),
            Err(AuthError::WrongSigner { .. })
        ));
    }

    #[test]
    fn headers_are_required_and_parsed() {
        assert_eq!(Envelope::from_headers(|_| None), Err(AuthError::Missing(HEADER_ADDRESS)));
        let r = Envelope::from_headers(|n| Some(if n == HEADER_NONCE { "x" } else { "0x00" }));
        assert!(matches!(r, Err(AuthError::Malformed { .. })), "{r:?}");
    }
}
