//! The execution receipt as `EscrowReward.releasePayment` takes it: its hashed fields, as the
//! contract's `Receipt` struct. The contract recomputes the receipt's EIP-712 `hashStruct` from
//! them; [`hash`] is the same computation here.

use alloy::primitives::B256;
use alloy::sol_types::SolStruct;

pub use crate::bindings::EscrowReward::{Environment, Input, Limits, Outcome, Receipt, Runtime};

/// The receipt format version the contracts hash.
pub const VERSION: u32 = 2;

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
