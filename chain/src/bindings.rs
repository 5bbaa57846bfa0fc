//! The contracts' Rust bindings, generated once by `sol!` from the committed artifacts
//! (`contracts/artifacts/NAME.sol`: each contract's ABI as a Solidity interface, written by
//! `contracts/compile.js`; `NAME.bin`: its creation bytecode), and the EIP-712 types consumers
//! sign for them.
//!
//! Every module here is the contract of the same name: its calls (`lockPaymentCall`...), its
//! events (`PaymentLocked`...) and its structs. `TidepoolErrors` declares every custom error
//! any of the contracts reverts with (see [`crate::error`]).
//!
//! Signatures checked on chain are EIP-712 typed data under [`domain`]: `name` "Tidepool",
//! `version` "1", the chain id and `verifyingContract` = the agreement store. (The provider's
//! HTTP request signatures use the same name and version with the provider's address; a
//! signature for one is worthless for the other.)

// `sol!` generates public modules, calls, events, errors and struct fields without doc
// comments (their documentation is the Solidity source's), and lint attributes on a macro
// invocation are ignored: hence the allow for this file. What is written here by hand is
// documented all the same.
#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::primitives::Address;
use alloy::sol_types::{Eip712Domain, eip712_domain};

alloy::sol!("../contracts/artifacts/AgreementStore.sol");
alloy::sol!("../contracts/artifacts/DIDRegistry.sol");
alloy::sol!("../contracts/artifacts/TidepoolTestToken.sol");
alloy::sol!("../contracts/artifacts/LockPaymentCondition.sol");
alloy::sol!("../contracts/artifacts/ComputeUploadCondition.sol");
alloy::sol!("../contracts/artifacts/ComputeGrantCondition.sol");
alloy::sol!("../contracts/artifacts/EscrowReward.sol");
alloy::sol!("../contracts/artifacts/TidepoolErrors.sol");

/// The creation bytecode of each deployable contract (`contracts/artifacts/*.bin`, hex).
pub mod bytecode {
    /// `AgreementStore`.
    pub const AGREEMENT_STORE: &str = include_str!("../../contracts/artifacts/AgreementStore.bin");
    /// `DIDRegistry`.
    pub const DID_REGISTRY: &str = include_str!("../../contracts/artifacts/DIDRegistry.bin");
    /// `TidepoolTestToken`, the ERC-20 of test deployments.
    pub const TEST_TOKEN: &str = include_str!("../../contracts/artifacts/TidepoolTestToken.bin");
    /// `LockPaymentCondition`.
    pub const LOCK_PAYMENT_CONDITION: &str = include_str!("../../contracts/artifacts/LockPaymentCondition.bin");
    /// `ComputeUploadCondition`.
    pub const COMPUTE_UPLOAD_CONDITION: &str = include_str!("../../contracts/artifacts/ComputeUploadCondition.bin");
    /// `ComputeGrantCondition`.
    pub const COMPUTE_GRANT_CONDITION: &str = include_str!("../../contracts/artifacts/ComputeGrantCondition.bin");
    /// `EscrowReward`.
    pub const ESCROW_REWARD: &str = include_str!("../../contracts/artifacts/EscrowReward.bin");
}

/// The EIP-712 structs consumers sign for the contracts. The same definitions as the
/// provider's HTTP protocol (`tidepool_provider::bindings`); the contracts hash them with the
/// type strings `AgreementStore::SERVICE_AGREEMENT_TYPEHASH` and
/// `ComputeUploadCondition::ALGORITHM_TYPEHASH`, which a test checks against these.
pub mod eip712 {
    alloy::sol! {
        /// The agreement a consumer signs (OEP-12): template, condition keys, values hashes,
        /// timeouts (seconds; 0 for none), agreement id; conditions in the template's order.
        #[derive(Debug, PartialEq, Eq)]
        struct ServiceAgreement {
            bytes32 templateId;
            bytes32[] conditionKeys;
            bytes32[] valuesHashList;
            uint256[] timeouts;
            bytes32 serviceAgreementId;
        }

        /// The consumer's signed hash of the algorithm it uploaded (BLAKE3 of the module).
        #[derive(Debug, PartialEq, Eq)]
        struct Algorithm {
            bytes32 serviceAgreementId;
            bytes32 algorithmHash;
        }
    }
}

/// The domain of every signature the contracts check.
pub fn domain(chain_id: u64, agreement_store: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Tidepool",
        version: "1",
        chain_id: chain_id,
        verifying_contract: agreement_store,
    }
}
