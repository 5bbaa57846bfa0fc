//! `receipt_hash`: the receipt as its EIP-712 structs, and their `hashStruct`. Version 2 is
//! encoded by hand (the type hashes come from the `sol!` definitions), with the struct hashes
//! that repeat from job to job remembered per thread; version 1 goes through alloy.

use alloy_primitives::{B256, Keccak256, keccak256};
use alloy_sol_types::SolStruct;

use super::{EnvironmentInfo, InputRoot, Outcome, Receipt, RuntimeInfo, eip712};
use crate::limits::Limits;

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
