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

use alloy_primitives::{B256, Keccak256, keccak256};
use alloy_sol_types::SolStruct;
use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// The receipt format version written by this runtime.
pub const RECEIPT_VERSION: u32 = 2;

/// The EIP-712 types the receipt hash is defined over (version 2; version 1 in [`eip712::v1`]).
pub mod eip712 {
    alloy_sol_types::sol! {
        /// One input dataset (or an environment's extra mount): the name it is mounted under
        /// and its tree root.
        #[derive(Debug)]
        struct Input {
            string name;
            bytes32 root;
        }

        /// The environment the algorithm ran in: a pinned module and how it is called.
        /// `moduleHash` is zero when the algorithm is itself the module.
        #[derive(Debug)]
        struct Environment {
            string name;
            bytes32 moduleHash;
            string[] argv;
            string[] env;
            Input[] mounts;
        }

        /// How the guest stopped. `code` is the exit code for `exited`, else 0; `message` is
        /// the trap message for `trap`, else empty.
        #[derive(Debug)]
        struct Outcome {
            string kind;
            int32 code;
            string message;
        }

        #[derive(Debug)]
        struct Limits {
            uint64 fuel;
            uint64 memoryBytes;
            uint64 timeoutMs;
            uint64 outputBytes;
            uint64 outputFiles;
            uint64 stdoutBytes;
            uint64 stderrBytes;
            uint64 moduleBytes;
            uint64 maxStackHeight;
        }

        #[derive(Debug)]
        struct Runtime {
            string tidepoolVersion;
            string wasmtimeVersion;
            bytes32 engineConfigHash;
        }

        #[derive(Debug)]
        struct Receipt {
            uint32 version;
            Environment environment;
            bytes32 algorithmHash;
            string algorithmName;
            string[] args;
            Input[] inputs;
            bytes32 outputsRoot;
            bytes32 stdoutHash;
            uint64 stdoutLen;
            bytes32 stderrHash;
            uint64 stderrLen;
            Outcome outcome;
            uint64 fuelConsumed;
            Limits limits;
            Runtime runtime;
            bytes32 seed;
            bool deterministic;
        }
    }

    /// The version-1 types (no environment; the native stack limit in `Limits`).
    pub mod v1 {
        alloy_sol_types::sol! {
            #[derive(Debug)]
            struct Input {
                string name;
                bytes32 root;
            }

            #[derive(Debug)]
            struct Outcome {
                string kind;
                int32 code;
                string message;
            }

            #[derive(Debug)]
            struct Limits {
                uint64 fuel;
                uint64 memoryBytes;
                uint64 timeoutMs;
                uint64 outputBytes;
                uint64 outputFiles;
                uint64 stdoutBytes;
                uint64 stderrBytes;
                uint64 moduleBytes;
                uint64 maxWasmStack;
            }

            #[derive(Debug)]
            struct Runtime {
                string tidepoolVersion;
                string wasmtimeVersion;
                bytes32 engineConfigHash;
            }

            #[derive(Debug)]
            struct Receipt {
                uint32 version;
                bytes32 algorithmHash;
                string algorithmName;
                string[] args;
                Input[] inputs;
                bytes32 outputsRoot;
                bytes32 stdoutHash;
                uint64 stdoutLen;
                bytes32 stderrHash;
                uint64 stderrLen;
                Outcome outcome;
                uint64 fuelConsumed;
                Limits limits;
                Runtime runtime;
                bytes32 seed;
                bool deterministic;
            }
        }
    }
}

/// How the guest's run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// `_start` returned (code 0) or the guest called `proc_exit(code)`.
    Exited { code: i32 },
    /// The fuel limit was reached.
    OutOfFuel,
    /// The guest trapped after being refused memory beyond its limit (or its initial memory
    /// exceeded the limit).
    MemoryLimit,
    /// The guest trapped.
    Trap { message: String },
    /// The wall-clock timeout expired. The only non-deterministic outcome.
    Timeout,
    /// The guest tried to cross the output quota.
    OutputQuota,
    /// The job was stopped on request before it finished. Like `timeout`, it depends on when
    /// that happened, so it is not deterministic.
    Stopped,
}

impl Outcome {
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
    pub name: String,
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
    pub tidepool_version: String,
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
    pub wall_time_ms: u64,
    pub compile_cached: bool,
}

/// An execution receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub version: u32,
    pub receipt_hash: B256,
    /// The environment (version 2 and later; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentInfo>,
    pub algorithm_hash: B256,
    pub algorithm_name: String,
    pub args: Vec<String>,
    pub inputs: Vec<InputRoot>,
    pub outputs_root: B256,
    pub stdout_hash: B256,
    pub stdout_len: u64,
    pub stderr_hash: B256,
    pub stderr_len: u64,
    pub outcome: Outcome,
    pub fuel_consumed: u64,
    pub limits: Limits,
    pub runtime: RuntimeInfo,
    pub seed: B256,
    pub deterministic: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<ReceiptSignature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ReceiptMeta>,
}

impl Receipt {
    /// The receipt as the version-2 EIP-712 struct its hash is defined over. (For a version-1
    /// receipt, see [`to_eip712_v1`](Self::to_eip712_v1).)
    pub fn to_eip712(&self) -> eip712::Receipt {
        let (code, message) = self.outcome_parts();
        let l = &self.limits;
        let env = self.environment.clone().unwrap_or_else(|| EnvironmentInfo::module(&self.algorithm_name));
        eip712::Receipt {
            version: self.version,
            environment: eip712::Environment {
                name: env.name,
                moduleHash: env.module_hash,
                argv: env.argv,
                env: env.env,
                mounts: env.mounts.iter().map(|m| eip712::Input { name: m.name.clone(), root: m.root }).collect(),
            },
            algorithmHash: self.algorithm_hash,
            algorithmName: self.algorithm_name.clone(),
            args: self.args.clone(),
            inputs: self.inputs.iter().map(|i| eip712::Input { name: i.name.clone(), root: i.root }).collect(),
            outputsRoot: self.outputs_root,
            stdoutHash: self.stdout_hash,
            stdoutLen: self.stdout_len,
            stderrHash: self.stderr_hash,
            stderrLen: self.stderr_len,
            outcome: eip712::Outcome { kind: self.outcome.kind().to_string(), code, message: message.to_string() },
            fuelConsumed: self.fuel_consumed,
            limits: eip712::Limits {
                fuel: l.fuel,
                memoryBytes: l.memory_bytes,
                timeoutMs: l.timeout_ms,
                outputBytes: l.output_bytes,
                outputFiles: l.output_files,
                stdoutBytes: l.stdout_bytes,
                stderrBytes: l.stderr_bytes,
                moduleBytes: l.module_bytes,
                maxStackHeight: l.max_stack_height,
            },
            runtime: eip712::Runtime {
                tidepoolVersion: self.runtime.tidepool_version.clone(),
                wasmtimeVersion: self.runtime.wasmtime_version.clone(),
                engineConfigHash: self.runtime.engine_config_hash,
            },
            seed: self.seed,
            deterministic: self.deterministic,
        }
    }

    /// The receipt as the version-1 EIP-712 struct (no environment, `maxWasmStack`).
    pub fn to_eip712_v1(&self) -> eip712::v1::Receipt {
        use eip712::v1;
        let (code, message) = self.outcome_parts();
        let l = &self.limits;
        v1::Receipt {
            version: self.version,
            algorithmHash: self.algorithm_hash,
            algorithmName: self.algorithm_name.clone(),
            args: self.args.clone(),
            inputs: self.inputs.iter().map(|i| v1::Input { name: i.name.clone(), root: i.root }).collect(),
            outputsRoot: self.outputs_root,
            stdoutHash: self.stdout_hash,
            stdoutLen: self.stdout_len,
            stderrHash: self.stderr_hash,
            stderrLen: self.stderr_len,
            outcome: v1::Outcome { kind: self.outcome.kind().to_string(), code, message: message.to_string() },
            fuelConsumed: self.fuel_consumed,
            limits: v1::Limits {
                fuel: l.fuel,
                memoryBytes: l.memory_bytes,
                timeoutMs: l.timeout_ms,
                outputBytes: l.output_bytes,
                outputFiles: l.output_files,
                stdoutBytes: l.stdout_bytes,
                stderrBytes: l.stderr_bytes,
                moduleBytes: l.module_bytes,
                maxWasmStack: l.max_wasm_stack,
            },
            runtime: v1::Runtime {
                tidepoolVersion: self.runtime.tidepool_version.clone(),
                wasmtimeVersion: self.runtime.wasmtime_version.clone(),
                engineConfigHash: self.runtime.engine_config_hash,
            },
            seed: self.seed,
            deterministic: self.deterministic,
        }
    }

    /// `Outcome.code` and `Outcome.message` of the hashed struct.
    fn outcome_parts(&self) -> (i32, &str) {
        match &self.outcome {
            Outcome::Exited { code } => (*code, ""),
            Outcome::Trap { message } => (0, message.as_str()),
            _ => (0, ""),
        }
    }

    /// The EIP-712 signing hash of the receipt under `domain` (`primaryType: Receipt`, the
    /// types of the receipt's version): what a provider signs.
    pub fn eip712_signing_hash(&self, domain: &alloy_sol_types::Eip712Domain) -> B256 {
        let mut digest = [0u8; 66];
        digest[0] = 0x19;
        digest[1] = 0x01;
        digest[2..34].copy_from_slice(domain.hash_struct().as_slice());
        digest[34..].copy_from_slice(self.compute_hash().as_slice());
        keccak256(digest)
    }

    /// The hash of every field but `receipt_hash`, `signatures` and `meta`: EIP-712
    /// `hashStruct` of [`to_eip712`](Self::to_eip712) (version 2) or of
    /// [`to_eip712_v1`](Self::to_eip712_v1) (version 1).
    ///
    /// Version 2 is encoded here rather than through `SolStruct::eip712_hash_struct`, which
    /// rebuilds and rehashes the `encodeType` strings of every type on every call (two thirds
    /// of the cost, and receipts are sealed on every job); the type hashes still come from the
    /// `sol!` definitions, once, and a test checks both paths agree. Version 1 receipts are
    /// only hashed when verified, through alloy.
    pub fn compute_hash(&self) -> B256 {
        if self.version == 1 {
            return self.to_eip712_v1().eip712_hash_struct();
        }
        let t = type_hashes();
        let word_u64 = |v: u64| B256::left_padding_from(&v.to_be_bytes());
        let string = |v: &str| keccak256(v.as_bytes());
        let strings = |v: &[String]| keccak_words(v.iter().map(|a| string(a)));
        let roots = |v: &[InputRoot]| keccak_words(v.iter().map(|i| keccak_words([t.input, string(&i.name), i.root])));

        let module_env;
        let env = match &self.environment {
            Some(env) => env,
            None => {
                module_env = EnvironmentInfo::module(&self.algorithm_name);
                &module_env
            }
        };
        let environment = remembered(&LAST_ENVIRONMENT, env, || {
            keccak_words([
                t.environment,
                string(&env.name),
                env.module_hash,
                strings(&env.argv),
                strings(&env.env),
                roots(&env.mounts),
            ])
        });
        let outcome = remembered(&LAST_OUTCOME, &self.outcome, || {
            let (code, message) = self.outcome_parts();
            // int32, sign-extended to 32 bytes.
            let code = B256::from(alloy_primitives::I256::try_from(code).unwrap_or_default().to_be_bytes::<32>());
            keccak_words([t.outcome, string(self.outcome.kind()), code, string(message)])
        });
        let limits = remembered(&LAST_LIMITS, &self.limits, || {
            let l = &self.limits;
            keccak_words([
                t.limits,
                word_u64(l.fuel),
                word_u64(l.memory_bytes),
                word_u64(l.timeout_ms),
                word_u64(l.output_bytes),
                word_u64(l.output_files),
                word_u64(l.stdout_bytes),
                word_u64(l.stderr_bytes),
                word_u64(l.module_bytes),
                word_u64(l.max_stack_height),
            ])
        });
        let runtime = remembered(&LAST_RUNTIME, &self.runtime, || {
            keccak_words([
                t.runtime,
                string(&self.runtime.tidepool_version),
                string(&self.runtime.wasmtime_version),
                self.runtime.engine_config_hash,
            ])
        });
        keccak_words([
            t.receipt,
            word_u64(self.version.into()),
            environment,
            self.algorithm_hash,
            string(&self.algorithm_name),
            strings(&self.args),
            roots(&self.inputs),
            self.outputs_root,
            self.stdout_hash,
            word_u64(self.stdout_len),
            self.stderr_hash,
            word_u64(self.stderr_len),
            outcome,
            word_u64(self.fuel_consumed),
            limits,
            runtime,
            self.seed,
            word_u64(self.deterministic.into()),
        ])
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

    /// The hashed fields that differ between `self` (expected) and `other` (actual), as
    /// `(field, expected, actual)`, with nested fields named by path (`limits.fuel`,
    /// `inputs[books].root`).
    pub fn diff(&self, other: &Receipt) -> Vec<FieldDiff> {
        let (a, b) = (hashed_json(self), hashed_json(other));
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        // Causes first (what was run, on what, how), then their consequences.
        const ORDER: &[&str] = &[
            "version",
            "runtime",
            "environment",
            "algorithm",
            "args",
            "inputs",
            "limits",
            "seed",
            "outcome",
            "fuel_consumed",
            "outputs_root",
            "stdout",
            "stderr",
            "deterministic",
        ];
        out.sort_by_key(|d| ORDER.iter().position(|p| d.field.starts_with(p)).unwrap_or(ORDER.len()));
        out
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

/// keccak256 of concatenated words: a struct's `hashStruct` (type hash first) or the
/// encoding of an array.
fn keccak_words(words: impl IntoIterator<Item = B256>) -> B256 {
    let mut hasher = Keccak256::new();
    words.into_iter().for_each(|w| hasher.update(w));
    hasher.finalize()
}

type Remembered<T> = std::cell::RefCell<Option<(T, B256)>>;

thread_local! {
    // The struct hashes of the parts that repeat from job to job, for the last value seen on
    // this thread: a provider runs job after job on one runtime, under its services' limits,
    // and most jobs exit 0. Each saves two to four keccak permutations per receipt.
    static LAST_OUTCOME: Remembered<Outcome> = const { std::cell::RefCell::new(None) };
    static LAST_LIMITS: Remembered<Limits> = const { std::cell::RefCell::new(None) };
    static LAST_RUNTIME: Remembered<RuntimeInfo> = const { std::cell::RefCell::new(None) };
    static LAST_ENVIRONMENT: Remembered<EnvironmentInfo> = const { std::cell::RefCell::new(None) };
}

/// `hash()` of `value`, or the remembered hash when `value` equals the last one hashed here.
fn remembered<T: Clone + PartialEq>(
    last: &'static std::thread::LocalKey<Remembered<T>>,
    value: &T,
    hash: impl FnOnce() -> B256,
) -> B256 {
    last.with(|cell| {
        if let Some((seen, h)) = &*cell.borrow()
            && seen == value
        {
            return *h;
        }
        let h = hash();
        *cell.borrow_mut() = Some((value.clone(), h));
        h
    })
}

/// The EIP-712 type hashes of the receipt's structs, from their `sol!` definitions.
struct TypeHashes {
    receipt: B256,
    environment: B256,
    input: B256,
    outcome: B256,
    limits: B256,
    runtime: B256,
}

fn type_hashes() -> &'static TypeHashes {
    static HASHES: std::sync::LazyLock<TypeHashes> = std::sync::LazyLock::new(|| TypeHashes {
        receipt: keccak256(eip712::Receipt::eip712_encode_type().as_bytes()),
        environment: keccak256(eip712::Environment::eip712_encode_type().as_bytes()),
        input: keccak256(eip712::Input::eip712_encode_type().as_bytes()),
        outcome: keccak256(eip712::Outcome::eip712_encode_type().as_bytes()),
        limits: keccak256(eip712::Limits::eip712_encode_type().as_bytes()),
        runtime: keccak256(eip712::Runtime::eip712_encode_type().as_bytes()),
    });
    &HASHES
}

/// One field that differs between two receipts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, got {}", self.field, self.expected, self.actual)
    }
}

/// The hashed part of a receipt as JSON, with inputs keyed by name for readable diffs.
fn hashed_json(r: &Receipt) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        for unhashed in ["receipt_hash", "signatures", "meta"] {
            obj.remove(unhashed);
        }
        let inputs: serde_json::Map<String, serde_json::Value> =
            r.inputs.iter().map(|i| (i.name.clone(), serde_json::json!({ "root": i.root }))).collect();
        obj.insert("inputs".into(), serde_json::Value::Object(inputs));
    }
    v
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<FieldDiff>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else if path == "inputs" {
                    format!("inputs[{k}]")
                } else {
                    format!("{path}.{k}")
                };
                diff_json(&sub, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(FieldDiff {
            field: path.to_string(),
            expected: if a.is_null() { "(absent)".into() } else { a.to_string() },
            actual: if b.is_null() { "(absent)".into() } else { b.to_string() },
        }),
        _ => {}
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Receipt {
        Receipt {
            version: RECEIPT_VERSION,
            receipt_hash: B256::ZERO,
            environment: Some(EnvironmentInfo::module("wordfreq")),
            algorithm_hash: B256::repeat_byte(0x11),
            algorithm_name: "wordfreq".into(),
            args: vec!["--top".into(), "10".into()],
            inputs: vec![InputRoot { name: "books".into(), root: B256::repeat_byte(0x22) }],
            outputs_root: B256::repeat_byte(0x33),
            stdout_hash: B256::repeat_byte(0x44),
            stdout_len: 12,
            stderr_hash: B256::repeat_byte(0x55),
            stderr_len: 0,
            outcome: Outcome::Exited { code: 0 },
            fuel_consumed: 123_456,
            limits: Limits::default(),
            runtime: RuntimeInfo {
                tidepool_version: "0.1.0".into(),
                wasmtime_version: "48.0.8".into(),
                engine_config_hash: B256::repeat_byte(0x66),
            },
            seed: B256::repeat_byte(0x77),
            deterministic: true,
            signatures: vec![],
            meta: None,
        }
        .seal()
    }

    /// `sample()` as version 1 wrote it: no environment.
    fn sample_v1() -> Receipt {
        Receipt { version: 1, environment: None, ..sample() }.seal()
    }

    /// A receipt of a job in an environment with arguments, variables and an extra mount.
    fn sample_python() -> Receipt {
        Receipt {
            environment: Some(EnvironmentInfo {
                name: "python-3.12".into(),
                module_hash: B256::repeat_byte(0x99),
                argv: vec!["python".into(), "/algorithm/main.py".into(), "/data/inputs".into(), "/data/outputs".into()],
                env: vec!["PYTHONHASHSEED=0".into(), "PYTHONPATH=/sdk".into()],
                mounts: vec![InputRoot { name: "/sdk".into(), root: B256::repeat_byte(0xaa) }],
            }),
            ..sample()
        }
        .seal()
    }

    #[test]
    fn receipt_hash_test_vector() {
        let r = sample();
        assert!(r.hash_is_consistent());
        // EIP-712 by hand for the innermost struct, to pin the encoding down independently of
        // alloy: hashStruct(Input) = keccak256(typeHash || keccak256(name) || root).
        let type_hash = keccak256("Input(string name,bytes32 root)");
        let mut enc = type_hash.to_vec();
        enc.extend_from_slice(keccak256("books").as_slice());
        enc.extend_from_slice(B256::repeat_byte(0x22).as_slice());
        let input = eip712::Input { name: "books".into(), root: B256::repeat_byte(0x22) };
        assert_eq!(input.eip712_hash_struct(), keccak256(enc));
        assert_eq!(
            Receipt::eip712_encode_type(),
            "Receipt(uint32 version,Environment environment,bytes32 algorithmHash,string algorithmName,string[] args,\
             Input[] inputs,bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,bytes32 stderrHash,uint64 stderrLen,\
             Outcome outcome,uint64 fuelConsumed,Limits limits,Runtime runtime,bytes32 seed,bool deterministic)\
             Environment(string name,bytes32 moduleHash,string[] argv,string[] env,Input[] mounts)\
             Input(string name,bytes32 root)\
             Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,\
             uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxStackHeight)\
             Outcome(string kind,int32 code,string message)\
             Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
        );
        assert_eq!(
            r.receipt_hash.to_string(),
            "0x5ae3c84845a308cf4ea2aca38293183fce13e765632461815dd8a4ff9283415c",
            "the documented test vector for `sample()`"
        );
        assert_eq!(
            sample_python().receipt_hash.to_string(),
            "0x8acfd8e960673d46edcd20301306b61fff3cb7a86cb265276b342d6930a7ae5b",
            "the documented test vector for `sample_python()`"
        );
    }

    #[test]
    fn version_1_receipts_keep_their_hash() {
        let r = sample_v1();
        assert_eq!(
            eip712::v1::Receipt::eip712_encode_type(),
            "Receipt(uint32 version,bytes32 algorithmHash,string algorithmName,string[] args,Input[] inputs,\
             bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,bytes32 stderrHash,uint64 stderrLen,\
             Outcome outcome,uint64 fuelConsumed,Limits limits,Runtime runtime,bytes32 seed,bool deterministic)\
             Input(string name,bytes32 root)\
             Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,\
             uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxWasmStack)\
             Outcome(string kind,int32 code,string message)\
             Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
        );
        assert_eq!(
            r.receipt_hash.to_string(),
            "0x3b834165547220e2ee619c5bc3baa26dee20308dc79a27184080928ab755672e",
            "version 1's documented test vector (the same fields, hashed as version 1 hashed them)"
        );
        // What version 1 wrote parses and keeps its hash; the stack height it did not have
        // takes its default and changes nothing.
        let mut json = serde_json::to_value(&r).unwrap();
        json["limits"].as_object_mut().unwrap().remove("max_stack_height");
        let back: Receipt = serde_json::from_value(json).unwrap();
        assert_eq!(back.environment, None);
        assert!(back.hash_is_consistent());
        assert_ne!(r.receipt_hash, sample().receipt_hash, "the two versions hash differently");
    }

    #[test]
    fn the_signing_hash_is_eip712s() {
        let domain = alloy_sol_types::eip712_domain! { name: "Tidepool", version: "1", chain_id: 1337, };
        assert_eq!(sample().eip712_signing_hash(&domain), sample().to_eip712().eip712_signing_hash(&domain));
        assert_eq!(sample_v1().eip712_signing_hash(&domain), sample_v1().to_eip712_v1().eip712_signing_hash(&domain));
    }

    #[test]
    fn the_hand_encoding_matches_alloys_eip712() {
        let mut receipts = vec![sample(), sample_python()];
        let mut r = sample();
        r.environment = Some(EnvironmentInfo { argv: vec![], mounts: vec![], ..sample_python().environment() });
        receipts.push(r);
        let mut r = sample();
        r.args = vec![];
        r.inputs = vec![];
        r.outcome = Outcome::Trap { message: "wasm trap: integer divide by zero".into() };
        receipts.push(r);
        let mut r = sample();
        r.outcome = Outcome::Exited { code: -7 };
        r.inputs.push(InputRoot { name: "weather".into(), root: B256::repeat_byte(0x88) });
        r.args = vec!["".into(), "ünïcode".into(), "x".repeat(300)];
        r.deterministic = false;
        r.version = u32::MAX;
        r.limits.fuel = u64::MAX;
        receipts.push(r);
        for (n, code) in [(3, i32::MIN), (4, i32::MAX)] {
            let mut r = sample();
            r.outcome = Outcome::Exited { code };
            r.algorithm_name = "a".repeat(n);
            receipts.push(r);
        }
        // Twice, in order: the parts remembered from one receipt must not leak into the next.
        for r in receipts.iter().chain(&receipts) {
            assert_eq!(r.compute_hash(), r.to_eip712().eip712_hash_struct(), "{r:?}");
            assert_eq!(r.compute_hash(), r.to_eip712().eip712_hash_struct(), "{r:?}");
        }
    }

    #[test]
    fn every_hashed_field_changes_the_hash_and_unhashed_ones_do_not() {
        let base = sample();
        let mut changed = base.clone();
        changed.limits.fuel += 1;
        assert_ne!(changed.compute_hash(), base.receipt_hash);
        let mut changed = base.clone();
        changed.outcome = Outcome::Trap { message: "x".into() };
        assert_ne!(changed.compute_hash(), base.receipt_hash);
        let mut meta_only = base.clone();
        meta_only.meta = Some(ReceiptMeta { wall_time_ms: 5, compile_cached: true });
        assert_eq!(meta_only.compute_hash(), base.receipt_hash);
    }

    #[test]
    fn json_round_trips_with_the_contract_field_names() {
        let r = sample();
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "version",
            "receipt_hash",
            "algorithm_hash",
            "inputs",
            "outputs_root",
            "stdout_hash",
            "stderr_hash",
            "outcome",
            "fuel_consumed",
            "limits",
            "runtime",
            "seed",
            "deterministic",
        ] {
            assert!(json.get(field).is_some(), "receipt JSON lacks `{field}`");
        }
        assert_eq!(json["outcome"], serde_json::json!({"kind": "exited", "code": 0}));
        let back: Receipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn diff_names_nested_fields() {
        let a = sample();
        let mut b = a.clone();
        b.inputs[0].root = B256::repeat_byte(0x99);
        b.limits.memory_bytes = 1;
        b.meta = Some(ReceiptMeta::default());
        b.fuel_consumed += 1;
        let fields: Vec<String> = a.diff(&b).into_iter().map(|d| d.field).collect();
        assert_eq!(fields, ["inputs[books].root", "limits.memory_bytes", "fuel_consumed"], "causes first");
    }
}
