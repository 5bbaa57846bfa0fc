//! The protocol's EIP-712 types, declared once with alloy's `sol!`, and the signing domain
//! they are used under.
//!
//! Every signature in the protocol is EIP-712 typed data with `name` "Tidepool", `version` "1"
//! and the keeper's `chainId`. Requests and receipts are signed under the provider's
//! [`domain`] (`verifyingContract`: the provider's address), so a signature made for one
//! provider (or chain) is worthless at another. What a consumer signs for the agreement itself
//! (`ServiceAgreement`, `Algorithm`) is signed under the keeper's domain: the provider's on the
//! embedded keeper, the agreement store contract's on a chain, where the contracts check it
//! (`Keeper::agreement_domain`). `ServiceAgreement` and `Algorithm` are the contracts' types
//! (`tidepool_chain::bindings::eip712`); the receipt type is the runtime's
//! (`tidepool_runtime::receipt::eip712`).

use alloy_primitives::Address;
use alloy_sol_types::{Eip712Domain, eip712_domain};

alloy_sol_types::sol! {
    /// One HTTP request by a consumer (or publisher). `contentHash` is keccak-256 of the body
    /// (of nothing for a body-less request); `nonce` must be greater than the signer's last one.
    #[derive(Debug)]
    struct Request {
        /// The HTTP method, upper case.
        string method;
        /// The path with its query, as sent.
        string path;
        /// keccak-256 of the body.
        bytes32 contentHash;
        /// Greater than the signer's last nonce at this provider.
        uint64 nonce;
        /// When the signature expires (Unix seconds).
        uint64 expiry;
    }
}

pub use tidepool_chain::bindings::eip712::{Algorithm, ServiceAgreement};

/// The signing domain of a provider on a chain.
pub fn domain(chain_id: u64, provider: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Tidepool",
        version: "1",
        chain_id: chain_id,
        verifying_contract: provider,
    }
}
