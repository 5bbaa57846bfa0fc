//! The execution receipt as `EscrowReward.releasePayment` takes it: its hashed fields, as the
//! contract's `Receipt` struct, converted from the runtime's receipt
//! (`From<&tidepool_runtime::Receipt>`). The contract recomputes the receipt's EIP-712
//! `hashStruct` from them, which is `tidepool_runtime::Receipt::compute_hash` for a version-2
//! receipt (the contract refuses other versions); [`hash`] is the same computation here.

use alloy::primitives::B256;
use alloy::sol_types::SolStruct;

pub use crate::bindings::EscrowReward::{Environment, Input, Limits, Outcome, Receipt, Runtime};

/// The receipt format version the contracts hash.
pub const VERSION: u32 = 2;

fn input(i: tidepool_runtime::receipt::eip712::Input) -> Input {
    Input { name: i.name, root: i.root }
}

impl From<&tidepool_runtime::Receipt> for Receipt {
    /// The hashed fields of a runtime receipt, through its own EIP-712 struct (so a version-1
    /// receipt keeps its version, and the contract refuses it).
    fn from(r: &tidepool_runtime::Receipt) -> Self {
        let e = r.to_eip712();
        Receipt {
            version: e.version,
            environment: Environment {
                name: e.environment.name,
                moduleHash: e.environment.moduleHash,
                argv: e.environment.argv,
                env: e.environment.env,
                mounts: e.environment.mounts.into_iter().map(input).collect(),
            },
            algorithmHash: e.algorithmHash,
            algorithmName: e.algorithmName,
            args: e.args,
            inputs: e.inputs.into_iter().map(input).collect(),
            outputsRoot: e.outputsRoot,
            stdoutHash: e.stdoutHash,
            stdoutLen: e.stdoutLen,
            stderrHash: e.stderrHash,
            stderrLen: e.stderrLen,
            outcome: Outcome { kind: e.outcome.kind, code: e.outcome.code, message: e.outcome.message },
            fuelConsumed: e.fuelConsumed,
            limits: Limits {
                fuel: e.limits.fuel,
                memoryBytes: e.limits.memoryBytes,
                timeoutMs: e.limits.timeoutMs,
                outputBytes: e.limits.outputBytes,
                outputFiles: e.limits.outputFiles,
                stdoutBytes: e.limits.stdoutBytes,
                stderrBytes: e.limits.stderrBytes,
                moduleBytes: e.limits.moduleBytes,
                maxStackHeight: e.limits.maxStackHeight,
            },
            runtime: Runtime {
                tidepoolVersion: e.runtime.tidepoolVersion,
                wasmtimeVersion: e.runtime.wasmtimeVersion,
                engineConfigHash: e.runtime.engineConfigHash,
            },
            seed: e.seed,
            deterministic: e.deterministic,
        }
    }
}

/// `hashStruct(Receipt)`, as the contract computes it.
pub fn hash(receipt: &Receipt) -> B256 {
    receipt.eip712_hash_struct()
}

/// The EIP-712 `encodeType` of the receipt (documented for contract authors).
pub fn encode_type() -> String {
    Receipt::eip712_encode_type().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_and_the_hash_are_the_runtimes() {
        assert_eq!(encode_type(), tidepool_runtime::Receipt::eip712_encode_type());
        let r = tidepool_runtime::Receipt {
            version: 2,
            receipt_hash: B256::ZERO,
            environment: Some(tidepool_runtime::receipt::EnvironmentInfo::module("wordfreq")),
            algorithm_hash: B256::repeat_byte(0x11),
            algorithm_name: "wordfreq".into(),
            args: vec!["--top".into(), "10".into()],
            inputs: vec![tidepool_runtime::receipt::InputRoot { name: "books".into(), root: B256::repeat_byte(2) }],
            outputs_root: B256::repeat_byte(3),
            stdout_hash: B256::repeat_byte(4),
            stdout_len: 12,
            stderr_hash: B256::repeat_byte(5),
            stderr_len: 0,
            outcome: tidepool_runtime::Outcome::Exited { code: -7 },
            fuel_consumed: 123,
            limits: tidepool_runtime::Limits::default(),
            runtime: tidepool_runtime::receipt::RuntimeInfo {
                tidepool_version: "0.1.0".into(),
                wasmtime_version: "48.0.8".into(),
                engine_config_hash: B256::repeat_byte(6),
            },
            seed: B256::repeat_byte(7),
            deterministic: true,
            signatures: vec![],
            meta: None,
        };
        assert_eq!(hash(&Receipt::from(&r)), r.compute_hash());
    }

    #[test]
    fn the_receipt_type_is_the_specified_one() {
        assert_eq!(
            encode_type(),
            "Receipt(uint32 version,Environment environment,bytes32 algorithmHash,string algorithmName,\
             string[] args,Input[] inputs,bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,\
             bytes32 stderrHash,uint64 stderrLen,Outcome outcome,uint64 fuelConsumed,Limits limits,\
             Runtime runtime,bytes32 seed,bool deterministic)\
             Environment(string name,bytes32 moduleHash,string[] argv,string[] env,Input[] mounts)\
             Input(string name,bytes32 root)\
             Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,\
             uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxStackHeight)\
             Outcome(string kind,int32 code,string message)\
             Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
        );
    }
}
