//! The HTTP API's request and response bodies, defined once and shared by the daemon, the
//! client and the CLI. JSON field names are camelCase, as in OEP-12.

use std::collections::BTreeMap;
use std::path::PathBuf;

use alloy_primitives::{Address, B256, Signature, U256};
use serde::{Deserialize, Serialize};

use tidepool_runtime::Outcome;

use super::ddo::{AlgorithmPolicy, AssetKind, Ddo, Did};
use super::events::KeeperEvent;
use super::states::{JobStatus, PaymentState};
use super::template::ConditionName;

/// Signatures on the wire: 65 bytes (r, s, v) as 0x-hex, the form wallets produce.
pub mod signature_hex {
    use alloy_primitives::Signature;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| serde::de::Error::custom(format!("not a 65-byte hex signature: {e}")))
    }
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`bad_signature`, `replay`, `not_found`...).
    pub code: String,
    pub message: String,
}

/// The body of requests that carry no parameters: exactly `{}` (any other JSON is a 400).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Empty;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an empty JSON object `{}`")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Empty, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(Empty {}),
                    Some(key) => {
                        Err(serde::de::Error::custom(format!("unexpected field `{key}`: the body must be {{}}")))
                    }
                }
            }
        }
        d.deserialize_map(Visitor)
    }
}

// ---- publishing -----------------------------------------------------------------------------

/// `POST /api/v1/uploads`: an upload session to add files to before publishing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadSession {
    pub id: String,
}

/// `PUT /api/v1/uploads/{id}/files/{dataset}/{path}`: the stored file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    pub dataset: String,
    pub path: String,
    pub hash: B256,
    pub size: u64,
}

/// `POST /api/v1/uploads/{id}/reference`: a directory on the provider's own disk, copied into
/// the dataset (operators only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceRequest {
    pub dataset: String,
    pub local_path: PathBuf,
}

/// The limits a compute service offers jobs (absent fields take the provider's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceLimits {
    pub max_fuel: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub output_bytes: Option<u64>,
    pub output_files: Option<u64>,
}

/// `POST /api/v1/uploads/{id}/publish`: turn the session's files into an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub license: String,
    pub kind: AssetKind,
    /// Token base units per unit of fuel (datasets; default 1).
    #[serde(default)]
    pub price_per_fuel: Option<U256>,
    #[serde(default)]
    pub limits: ServiceLimits,
    /// Which algorithms may run on a dataset (default: any).
    #[serde(default)]
    pub trusted_algorithms: Option<AlgorithmPolicy>,
    /// Condition timeouts in seconds, by condition name (defaults otherwise).
    #[serde(default)]
    pub timeouts: BTreeMap<ConditionName, u64>,
    /// For an algorithm: the environment its files run in (one this provider offers, e.g.
    /// `python-3.12`), the files being one dataset holding the environment's entry file
    /// (`main.py`); none for an algorithm that is a module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// A published asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub did: Did,
    pub ddo: Ddo,
}

// ---- the agreement flow ---------------------------------------------------------------------

/// `POST /api/v1/services/compute/initialize` (OEP-12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitializeRequest {
    pub did: Did,
    pub service_agreement_id: B256,
    pub service_definition_id: String,
    /// The consumer's EIP-712 signature over the `ServiceAgreement` (65 bytes, 0x-hex).
    #[serde(with = "signature_hex")]
    pub signature: Signature,
    pub consumer_address: Address,
}

/// The query of `POST /api/v1/services/compute/upload`. The body is the module
/// (`application/wasm`), or empty when `algorithmDid` names a published algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadQuery {
    pub service_agreement_id: B256,
    /// The consumer's EIP-712 signature over `Algorithm(serviceAgreementId, algorithmHash)`.
    #[serde(with = "signature_hex")]
    pub signed_checksum: Signature,
    #[serde(default)]
    pub algorithm_did: Option<Did>,
    /// The name the algorithm runs under (`argv[0]`; default `algorithm`).
    #[serde(default)]
    pub algorithm_name: Option<String>,
    /// The environment that runs the algorithm (one the provider offers, e.g. `python-3.12`):
    /// the body is then the algorithm's files as a `tidepool-files-v1` archive
    /// (`application/vnd.tidepool.files`), and `algorithmHash` their tree root. Absent: the
    /// body is a module.
    #[serde(default)]
    pub environment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    pub algorithm_hash: B256,
    pub algorithm_name: String,
}

/// `POST /api/v1/services/compute/exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    pub service_agreement_id: B256,
    pub consumer_address: Address,
    /// Do not start before this time (Unix seconds): deferred execution.
    #[serde(default)]
    pub not_before: Option<u64>,
    /// Arguments for the algorithm, after its inputs and outputs directories.
    #[serde(default)]
    pub args: Vec<String>,
}

/// The latest progress a running algorithm reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub done: u64,
    pub total: Option<u64>,
    pub message: Option<String>,
}

/// A job, as its consumer sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub service_agreement_id: B256,
    pub did: Did,
    /// Ocean-style status code (see [`JobStatus`]).
    pub status: JobStatus,
    pub status_text: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub not_before: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_hash: Option<B256>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_did: Option<Did>,
    pub payment: PaymentState,
}

/// What a result is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Output,
    Log,
    Receipt,
}

/// One downloadable result of a job, by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultEntry {
    pub index: u32,
    pub kind: ResultKind,
    /// For outputs, the path under `/data/outputs`; for logs `stdout.log`/`stderr.log`; for
    /// the receipt `receipt.json`.
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the content (outputs and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<B256>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsView {
    pub job_id: String,
    pub results: Vec<ResultEntry>,
    /// The whole outputs tree (directories and symlinks too), as the receipt hashes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<tidepool_runtime::tree::Tree>,
}

// ---- the embedded keeper --------------------------------------------------------------------

/// `GET /api/v1/keeper/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsView {
    pub events: Vec<KeeperEvent>,
}

/// `POST /api/v1/keeper/credit`: an operator credits an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditRequest {
    pub address: Address,
    pub amount: U256,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceView {
    pub address: Address,
    pub balance: U256,
}

/// `POST /api/v1/keeper/refund`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgreementRef {
    pub service_agreement_id: B256,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    pub refunded: U256,
}

// ---- about the provider ---------------------------------------------------------------------

/// `GET /api/v1/provider`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    pub address: Address,
    pub chain_id: u64,
    pub keeper: String,
    /// The `verifyingContract` of the domain consumers sign agreements and algorithms under:
    /// the provider's address with the embedded keeper, the agreement store contract's on a
    /// chain.
    pub agreement_verifier: Address,
    /// With a chain keeper, consumers lock and refund payments from their own wallets (and
    /// need the chain's RPC and the contracts' addresses); otherwise through this provider.
    #[serde(default)]
    pub consumer_pays_directly: bool,
    pub template_id: B256,
    pub tidepool_version: String,
    pub wasmtime_version: String,
    pub dev_faucet: bool,
    pub max_module_bytes: u64,
    /// The environments algorithms may name besides modules.
    #[serde(default)]
    pub environments: Vec<crate::protocol::ddo::OfferedEnvironment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_are_exactly_an_empty_object() {
        assert_eq!(serde_json::from_str::<Empty>("{}").unwrap(), Empty {});
        for bad in ["[null,null]", "[]", "null", "{\"a\":1}", "1", "\"{}\""] {
            assert!(serde_json::from_str::<Empty>(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn signatures_travel_as_hex() {
        let sig = Signature::from_raw(&[7u8; 65]).unwrap_or(Signature::test_signature());
        let q = UploadQuery {
            service_agreement_id: B256::ZERO,
            signed_checksum: sig,
            algorithm_did: None,
            algorithm_name: None,
            environment: Some("python-3.12".into()),
        };
        let json = serde_json::to_value(&q).unwrap();
        assert!(json["signedChecksum"].as_str().unwrap().starts_with("0x"));
        assert_eq!(serde_json::from_value::<UploadQuery>(json).unwrap(), q);
    }
}
