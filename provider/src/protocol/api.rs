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

    /// Writes `sig` as 0x-hex.
    pub fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(sig)
    }

    /// Reads a 0x-hex signature; anything else is a deserialization error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| serde::de::Error::custom(format!("not a 65-byte hex signature: {e}")))
    }
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`bad_signature`, `replay`, `not_found`...).
    pub code: String,
    /// For people; for a 5xx, a generic text (the cause is only logged).
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
    /// The session's id, to name in the session's later requests.
    pub id: String,
}

/// `PUT /api/v1/uploads/{id}/files/{dataset}/{path}`: the stored file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    /// The dataset the file belongs to.
    pub dataset: String,
    /// Its path in the dataset (`/`-separated).
    pub path: String,
    /// BLAKE3 of its content.
    pub hash: B256,
    /// Its size in bytes.
    pub size: u64,
}

/// `POST /api/v1/uploads/{id}/reference`: a directory on the provider's own disk, copied into
/// the dataset (operators only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceRequest {
    /// The dataset to copy into.
    pub dataset: String,
    /// The directory, on the provider's disk.
    pub local_path: PathBuf,
}

/// The limits a compute service offers jobs (absent fields take the provider's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceLimits {
    /// Fuel a job may burn at most (the provider charges per unit used).
    pub max_fuel: Option<u64>,
    /// A job's linear memory at most, in bytes.
    pub memory_bytes: Option<u64>,
    /// A job's wall-clock time at most, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The outputs' total size at most, in bytes.
    pub output_bytes: Option<u64>,
    /// How many output files (and directories) at most.
    pub output_files: Option<u64>,
}

/// `POST /api/v1/uploads/{id}/publish`: turn the session's files into an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    /// The asset's name (its DDO's `metadata.main.name`).
    pub name: String,
    /// A description for people.
    #[serde(default)]
    pub description: String,
    /// Who made the asset.
    #[serde(default)]
    pub author: String,
    /// Its license (free text, e.g. an SPDX id).
    #[serde(default)]
    pub license: String,
    /// A dataset (with a Computing service) or an algorithm.
    pub kind: AssetKind,
    /// Token base units per unit of fuel (datasets; default 1).
    #[serde(default)]
    pub price_per_fuel: Option<U256>,
    /// The limits the Computing service offers jobs (datasets; each at most the provider's).
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
    /// The asset's DID.
    pub did: Did,
    /// Its DDO, as served by `GET /api/v1/assets/{did}`.
    pub ddo: Ddo,
}

// ---- the agreement flow ---------------------------------------------------------------------

/// `POST /api/v1/services/compute/initialize` (OEP-12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitializeRequest {
    /// The dataset asset.
    pub did: Did,
    /// The agreement's id, chosen by the consumer.
    pub service_agreement_id: B256,
    /// Which service of the DDO the agreement is for (its `index`).
    pub service_definition_id: String,
    /// The consumer's EIP-712 signature over the `ServiceAgreement` (65 bytes, 0x-hex).
    #[serde(with = "signature_hex")]
    pub signature: Signature,
    /// The consumer, who signed.
    pub consumer_address: Address,
}

/// The query of `POST /api/v1/services/compute/upload`. The body is the module
/// (`application/wasm`), or empty when `algorithmDid` names a published algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadQuery {
    /// The agreement the algorithm is for.
    pub service_agreement_id: B256,
    /// The consumer's EIP-712 signature over `Algorithm(serviceAgreementId, algorithmHash)`.
    #[serde(with = "signature_hex")]
    pub signed_checksum: Signature,
    /// A published algorithm to run instead of a module in the body.
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

/// What the provider kept for the agreement's algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    /// The algorithm's hash: its module's BLAKE3, or its files' tree root.
    pub algorithm_hash: B256,
    /// The name it runs under (sanitized).
    pub algorithm_name: String,
}

/// `POST /api/v1/services/compute/exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The agreement whose job to run (its compute must be granted).
    pub service_agreement_id: B256,
    /// The consumer (who must sign the request).
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
    /// Units of work done.
    pub done: u64,
    /// Units of work in all, when the algorithm knows.
    pub total: Option<u64>,
    /// What it is doing, in its words.
    pub message: Option<String>,
}

/// A job, as its consumer sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// The job's id.
    pub job_id: String,
    /// The agreement it runs under.
    pub service_agreement_id: B256,
    /// The dataset asset it runs on.
    pub did: Did,
    /// Ocean-style status code (see [`JobStatus`]).
    pub status: JobStatus,
    /// The status in words ([`JobStatus::text`]: `queued`, `running`, `finished`...).
    pub status_text: String,
    /// When it was queued (Unix seconds).
    pub created_at: u64,
    /// When its row last changed (Unix seconds).
    pub updated_at: u64,
    /// It does not start before this time (Unix seconds).
    pub not_before: u64,
    /// How many runs were started (a run cut short is retried, up to a bound).
    pub attempts: u32,
    /// The latest progress the running algorithm reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
    /// How the run ended (once it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why the job failed, when it could not run to an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The signed receipt's EIP-712 hash (once it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_hash: Option<B256>,
    /// The asset published from its outputs (once settled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_did: Option<Did>,
    /// Where its payment is.
    pub payment: PaymentState,
}

/// What a result is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    /// A file the algorithm wrote under `/data/outputs`.
    Output,
    /// Its standard output or error.
    Log,
    /// The signed receipt (`receipt.json`).
    Receipt,
}

/// One downloadable result of a job, by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultEntry {
    /// Its index, for `GET .../jobs/{id}/results/{index}`.
    pub index: u32,
    /// What it is.
    pub kind: ResultKind,
    /// For outputs, the path under `/data/outputs`; for logs `stdout.log`/`stderr.log`; for
    /// the receipt `receipt.json`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of the content (outputs and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<B256>,
}

/// `GET /api/v1/services/compute/jobs/{id}/results`: what an ended job produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsView {
    /// The job's id.
    pub job_id: String,
    /// Its outputs, its logs and its receipt, each downloadable by index.
    pub results: Vec<ResultEntry>,
    /// The whole outputs tree (directories and symlinks too), as the receipt hashes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<tidepool_runtime::tree::Tree>,
    /// The job as it is when this answer is made, so that a client need not ask again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
    /// The signed receipt, which the `receipt` result serves as pretty-printed JSON (that
    /// result's entry has the file's size and BLAKE3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<tidepool_runtime::Receipt>,
}

// ---- the embedded keeper --------------------------------------------------------------------

/// `GET /api/v1/keeper/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsView {
    /// Events after the asked position, oldest first.
    pub events: Vec<KeeperEvent>,
}

/// `POST /api/v1/keeper/credit`: an operator credits an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditRequest {
    /// The account to credit.
    pub address: Address,
    /// How much, in token base units.
    pub amount: U256,
}

/// An account's balance on the embedded keeper (after a credit or faucet: the new one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceView {
    /// The account.
    pub address: Address,
    /// Its balance, in token base units.
    pub balance: U256,
}

/// `POST /api/v1/keeper/agreements/{id}/refund`: what went back to the consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    /// The refunded amount, in token base units.
    pub refunded: U256,
}

// ---- about the provider ---------------------------------------------------------------------

/// `GET /api/v1/provider`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    /// The provider's address (its signing key): receipts are signed by it.
    pub address: Address,
    /// The chain id of the EIP-712 domains.
    pub chain_id: u64,
    /// Which keeper holds agreements: `embedded` or `evm`.
    pub keeper: String,
    /// The `verifyingContract` of the domain consumers sign agreements and algorithms under:
    /// the provider's address with the embedded keeper, the agreement store contract's on a
    /// chain.
    pub agreement_verifier: Address,
    /// With a chain keeper, consumers lock and refund payments from their own wallets (and
    /// need the chain's RPC and the contracts' addresses); otherwise through this provider.
    #[serde(default)]
    pub consumer_pays_directly: bool,
    /// The agreement template's id (see [`super::template`]).
    pub template_id: B256,
    /// The provider's Tidepool version.
    pub tidepool_version: String,
    /// The wasmtime version its runtime embeds.
    pub wasmtime_version: String,
    /// Whether `POST /api/v1/keeper/faucet` hands out tokens (development only).
    pub dev_faucet: bool,
    /// The largest module the provider admits, in bytes.
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
