//! The protocol's EIP-712 types, declared once with alloy's `sol!`, and the signing domain
//! they are used under.
//!
//! Every signature in the protocol is EIP-712 typed data under [`domain`]: `name` "Tidepool",
//! `version` "1", the keeper's `chainId`, and `verifyingContract` set to the provider's address,
//! so a signature made for one provider (or chain) is worthless at another. The receipt type is
//! defined by the runtime (`tidepool_runtime::receipt::eip712`).

use alloy_primitives::Address;
use alloy_sol_types::{Eip712Domain, eip712_domain};

alloy_sol_types::sol! {
    /// One HTTP request by a consumer (or publisher). `contentHash` is keccak-256 of the body
    /// (of nothing for a body-less request); `nonce` must be greater than the signer's last one.
    #[derive(Debug)]
    struct Request {
        string method;
        string path;
        bytes32 contentHash;
        uint64 nonce;
        uint64 expiry;
    }

    /// The service agreement a consumer signs to initialize it (OEP-12): the template, the
    /// conditions' keys, their parameter-value hashes and timeouts, and the agreement id.
    #[derive(Debug)]
    struct ServiceAgreement {
        bytes32 templateId;
        bytes32[] conditionKeys;
        bytes32[] valuesHashList;
        uint256[] timeouts;
        bytes32 serviceAgreementId;
    }

    /// The consumer's signed checksum of an uploaded algorithm (BLAKE3 of the module).
    #[derive(Debug)]
    struct Algorithm {
        bytes32 serviceAgreementId;
        bytes32 algorithmHash;
    }
}

/// The signing domain of a provider on a chain.
pub fn domain(chain_id: u64, provider: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Tidepool",
        version: "1",
        chain_id: chain_id,
        verifying_contract: provider,
    }
}
