//! Execution receipts: what ran, on what, under which limits, and what came out.
//!
//! A receipt is JSON. Its field names are a contract for other tools. Every field except
//! `receipt_hash`, `signatures` and `meta` is covered by `receipt_hash`, and none of those
//! carries wall-clock time.
//!
//! # `receipt_hash`: an EIP-712 struct hash
//!
//! `receipt_hash = hashStruct(Receipt)` as defined by EIP-712, over the struct types in
//! [`eip712`] (types encoded with `encodeType`, strings and arrays hashed, nested structs by
//! their own `hashStruct`). A Solidity contract can recompute it from the fields, and a wallet
//! signing EIP-712 typed data with `primaryType: "Receipt"` signs
//! `keccak256(0x1901 || domainSeparator || receipt_hash)`: the provider's signature binds the
//! domain (chain id, provider), the hash does not. The test vector is
//! `tests::receipt_hash_test_vector`.
//!
//! Content hashes inside the receipt (`algorithm_hash`, tree roots, stdout/stderr) are BLAKE3.
//!
//! # Versions
//!
//! * **2** (written today): adds the `environment` the algorithm ran in (see
//!   [`EnvironmentInfo`]) and records the stack limit in wasm terms (`limits.max_stack_height`;
//!   the native stack size, `limits.max_wasm_stack`, is part of the engine configuration and so
//!   covered by `runtime.engine_config_hash`). Hashed over [`eip712::Receipt`].
//! * **1**: no environment (the algorithm was always the module itself); the native stack limit
//!   `maxWasmStack` is hashed in `Limits`. Hashed over [`eip712::v1::Receipt`]. Version-1
//!   receipts still parse, hash and verify.

use alloy_primitives::{B256, keccak256};
use alloy_sol_types::SolStruct;
use serde::{Deserialize, Serialize};

use crate::limits::Limits;

mod diff;
pub mod eip712;
mod hash;
#[cfg(test)]
pub(crate) mod tests;

pub use diff::FieldDiff;

/// The receipt format version written by this runtime.
pub const RECEIPT_VERSION: u32 = 2;

/// How the guest's run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// `_start` returned (code 0) or the guest called `proc_exit(code)`.
    Exited {
        /// The exit code (0 when `_start` returned).
        code: i32,
    },
    /// The fuel limit was reached.
    OutOfFuel,
    /// The guest trapped after being refused memory beyond its limit (or its initial memory
    /// exceeded the limit).
    MemoryLimit,
    /// The guest trapped.
    Trap {
        /// wasmtime's description of the trap (the stack limit's own message when the
        /// module's stack counter ran out).
        message: String,
    },
    /// The wall-clock timeout expired. The only non-deterministic outcome.
    Timeout,
    /// The guest tried to cross the output quota.
    OutputQuota,
    /// The job was stopped on request before it finished. Like `timeout`, it depends on when
    /// that happened, so it is not deterministic.
    Stopped,
}

impl Outcome {
    /// The outcome's name in the receipt's JSON (`kind`) and in its hashed `Outcome.kind`:
    /// `exited`, `out_of_fuel`, `memory_limit`, `trap`, `timeout`, `output_quota`, `stopped`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Exited { .. } => "exited",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Trap { .. } => "trap",
            Outcome::Timeout => "timeout",
            Outcome::OutputQuota => "output_quota",
            Outcome::Stopped => "stopped",
        }
    }

    /// False for the outcomes that depend on wall time (`timeout`, `stopped`).
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Outcome::Timeout | Outcome::Stopped)
    }

    /// True when the algorithm ran to completion and exited 0.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0 })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited { code } => write!(f, "exited with code {code}"),
            Outcome::OutOfFuel => write!(f, "ran out of fuel"),
            Outcome::MemoryLimit => write!(f, "hit the memory limit"),
            Outcome::Trap { message } => write!(f, "trapped: {message}"),
            Outcome::Timeout => write!(f, "timed out"),
            Outcome::OutputQuota => write!(f, "hit the output quota"),
            Outcome::Stopped => write!(f, "was stopped"),
        }
    }
}

/// One input dataset of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRoot {
    /// The name it is mounted under (`/data/inputs/<name>`, or an environment mount's guest path).
    pub name: String,
    /// Its canonical tree root (see [`crate::tree`]).
    pub root: B256,
}

/// The environment a job ran in (receipt version 2): a pinned WebAssembly module and how it
/// is called. The guest's `argv` is `argv` followed by the job's `args`.
///
/// For an algorithm that is itself a module, `name` is [`EnvironmentInfo::MODULE`],
/// `module_hash` is zero and `argv` is `[<algorithm name>, "/data/inputs", "/data/outputs"]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentInfo {
    /// The environment's name (`module`, `python-3.12`, ...).
    pub name: String,
    /// BLAKE3 of the environment's module; zero for [`EnvironmentInfo::MODULE`].
    pub module_hash: B256,
    /// The fixed start of the guest's argv.
    pub argv: Vec<String>,
    /// The guest's environment variables, `NAME=value`, in order.
    pub env: Vec<String>,
    /// Extra read-only mounts (guest path and tree root), in order.
    pub mounts: Vec<InputRoot>,
}

impl EnvironmentInfo {
    /// The name of the environment of an algorithm that is itself a module.
    pub const MODULE: &'static str = "module";

    /// The environment of a module algorithm running as `name`.
    pub fn module(name: &str) -> Self {
        Self {
            name: Self::MODULE.into(),
            module_hash: B256::ZERO,
            argv: vec![name.to_string(), crate::job::INPUTS_DIR.into(), crate::job::OUTPUTS_DIR.into()],
            env: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

/// What executed the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfo {
    /// This crate's version ([`crate::VERSION`]).
    pub tidepool_version: String,
    /// The wasmtime version the runtime is built with ([`crate::engine::WASMTIME_VERSION`]).
    pub wasmtime_version: String,
    /// Hash of everything about the engine that can change what a guest observes.
    pub engine_config_hash: B256,
}

/// A signature over a receipt (not part of `receipt_hash`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    /// The signer's Ethereum address.
    pub signer: String,
    /// How the signature was made, e.g. `eip712`.
    pub scheme: String,
    /// The 65-byte signature, 0x-hex.
    pub signature: String,
    /// The EIP-712 domain the signature is bound to, when `scheme` is `eip712`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<serde_json::Value>,
}

/// Facts about the run that are not part of the hashed receipt (they vary between runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptMeta {
    /// Wall-clock time of the whole job (staging to sealing), in milliseconds.
    pub wall_time_ms: u64,
    /// True when the module came from the compile cache (in memory or on disk).
    pub compile_cached: bool,
}

/// An execution receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The receipt format version: [`RECEIPT_VERSION`] for receipts made now, 1 for older ones.
    pub version: u32,
    /// The EIP-712 `hashStruct` of every other field except `signatures` and `meta` (see
    /// [`compute_hash`](Self::compute_hash)).
    pub receipt_hash: B256,
    /// The environment (version 2 and later; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentInfo>,
    /// BLAKE3 of the module, or the tree root of an environment algorithm's files.
    pub algorithm_hash: B256,
    /// The name the algorithm ran under (a module's `argv[0]`).
    pub algorithm_name: String,
    /// The job's extra arguments, after the environment's argv.
    pub args: Vec<String>,
    /// The input datasets, sorted by name.
    pub inputs: Vec<InputRoot>,
    /// The tree root of what the guest left in `/data/outputs`.
    pub outputs_root: B256,
    /// BLAKE3 of the kept part of stdout (at most `limits.stdout_bytes`).
    pub stdout_hash: B256,
    /// Bytes the guest wrote to stdout in all, kept or not.
    pub stdout_len: u64,
    /// BLAKE3 of the kept part of stderr (at most `limits.stderr_bytes`).
    pub stderr_hash: B256,
    /// Bytes the guest wrote to stderr in all, kept or not.
    pub stderr_len: u64,
    /// How the guest's run ended.
    pub outcome: Outcome,
    /// Fuel used, at most `limits.fuel`.
    pub fuel_consumed: u64,
    /// The limits the job ran under.
    pub limits: Limits,
    /// What executed the job.
    pub runtime: RuntimeInfo,
    /// The seed of the guest's random stream (given, or [`derive_seed`]).
    pub seed: B256,
    /// False when the outcome depends on wall time ([`Outcome::is_deterministic`]): then a
    /// re-execution need not give the same receipt.
    pub deterministic: bool,
    /// Signatures over the receipt (not hashed), e.g. the provider's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<ReceiptSignature>,
    /// Facts about this run that are not hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ReceiptMeta>,
}

impl Receipt {
    /// `Outcome.code` and `Outcome.message` of the hashed struct.
    fn outcome_parts(&self) -> (i32, &str) {
        match &self.outcome {
            Outcome::Exited { code } => (*code, ""),
            Outcome::Trap { message } => (0, message.as_str()),
            _ => (0, ""),
        }
    }

    /// Sets `receipt_hash` from the other fields.
    pub fn seal(mut self) -> Self {
        self.receipt_hash = self.compute_hash();
        self
    }

    /// True when `receipt_hash` matches the other fields.
    pub fn hash_is_consistent(&self) -> bool {
        self.receipt_hash == self.compute_hash()
    }

    /// The EIP-712 `encodeType` string of the receipt (documented for contract authors).
    pub fn eip712_encode_type() -> String {
        eip712::Receipt::eip712_encode_type().into_owned()
    }

    /// The environment, also for a version-1 receipt (whose algorithm was the module itself).
    pub fn environment(&self) -> EnvironmentInfo {
        self.environment.clone().unwrap_or_else(|| EnvironmentInfo::module(&self.algorithm_name))
    }
}

/// The seed a job gets when none is given: derived from what the job is, so running the same
/// job twice gives the same receipt.
pub fn derive_seed(
    environment: &EnvironmentInfo,
    algorithm_hash: &B256,
    inputs: &[InputRoot],
    args: &[String],
) -> B256 {
    let mut bytes = b"tidepool-seed-v2".to_vec();
    bytes.extend_from_slice(environment.module_hash.as_slice());
    bytes.extend_from_slice(algorithm_hash.as_slice());
    for i in inputs {
        bytes.extend_from_slice(&(i.name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(i.name.as_bytes());
        bytes.extend_from_slice(i.root.as_slice());
    }
    for a in args {
        bytes.extend_from_slice(&(a.len() as u64).to_le_bytes());
        bytes.extend_from_slice(a.as_bytes());
    }
    keccak256(bytes)
}
