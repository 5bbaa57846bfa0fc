//! Errors: one variant per custom error the contracts revert with (decoded from the revert
//! data of a failed estimate, call or transaction), other reverts, and transport failures,
//! which are marked transient (and retried) or not.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{GenericContractError, SolInterface};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};

use crate::bindings::TidepoolErrors::TidepoolErrorsErrors as Revert;

/// `Result` with this crate's [`ChainError`].
pub type Result<T, E = ChainError> = std::result::Result<T, E>;

/// Why the escrow refused a receipt (`ReceiptMismatch.reason`, the contracts' `ReceiptCheck`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptCheck {
    /// The receipt's format version is not the one the contract hashes.
    Version,
    /// The receipt names another algorithm than the one uploaded.
    Algorithm,
    /// The receipt's inputs are not the asset's datasets as the DID registry holds them.
    Inputs,
    /// The receipt consumed more fuel than the agreement's maximum.
    Fuel,
    /// A reason code this crate does not know.
    Other(u8),
}

impl From<u8> for ReceiptCheck {
    fn from(code: u8) -> Self {
        match code {
            1 => ReceiptCheck::Version,
            2 => ReceiptCheck::Algorithm,
            3 => ReceiptCheck::Inputs,
            4 => ReceiptCheck::Fuel,
            other => ReceiptCheck::Other(other),
        }
    }
}

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    // The contracts' custom errors (contracts/src/TidepoolErrors.sol), in its order.
    /// An agreement, template or DID with this id exists already.
    #[error("{id} exists already")]
    AlreadyExists {
        /// The id.
        id: B256,
    },
    /// No agreement, template or DID with this id.
    #[error("{id} is not known to the contracts")]
    NotFound {
        /// The id.
        id: B256,
    },
    /// Only the store's owner (its deployer) may do this.
    #[error("{caller} is not allowed to do this")]
    Unauthorized {
        /// Who tried.
        caller: Address,
    },
    /// A template's definition is malformed.
    #[error("template condition {index} is malformed")]
    InvalidTemplate {
        /// The offending condition's index.
        index: U256,
    },
    /// The agreement's lists do not have one entry per condition of its template.
    #[error("the template has {expected} conditions, the agreement lists {found}")]
    LengthMismatch {
        /// Conditions in the template.
        expected: U256,
        /// Entries in the agreement's list.
        found: U256,
    },
    /// A signed condition key is not the one the template defines at its position.
    #[error("condition key {index} is {found}, the template's is {expected}")]
    ConditionKeyMismatch {
        /// The position.
        index: U256,
        /// The template's key there.
        expected: B256,
        /// The signed key.
        found: B256,
    },
    /// A timeout does not fit in 64 bits.
    #[error("timeout {index} is too large")]
    InvalidTimeout {
        /// The condition's index.
        index: U256,
    },
    /// The signature is malformed or was not made by the expected signer.
    #[error("the signature is invalid or not the consumer's")]
    InvalidSignature,
    /// The caller is not the control contract of a condition of this agreement with that
    /// function.
    #[error("{caller} is not the control contract of this condition of agreement {agreement}")]
    NotControlContract {
        /// The agreement's id.
        agreement: B256,
        /// Who called.
        caller: Address,
    },
    /// The agreement is closed (released or refunded): no condition can change any more.
    #[error("agreement {agreement} is closed")]
    AgreementClosed {
        /// The agreement's id.
        agreement: B256,
    },
    /// The condition is fulfilled already.
    #[error("condition {condition} of agreement {agreement} is fulfilled already")]
    AlreadyFulfilled {
        /// The agreement's id.
        agreement: B256,
        /// The condition's key.
        condition: B256,
    },
    /// A dependency of the condition is not fulfilled yet.
    #[error("condition {condition} of agreement {agreement} needs {dependency} fulfilled first")]
    DependencyUnfulfilled {
        /// The agreement's id.
        agreement: B256,
        /// The condition's key.
        condition: B256,
        /// The key of the unfulfilled dependency.
        dependency: B256,
    },
    /// The condition's deadline has passed.
    #[error("condition {condition} of agreement {agreement} timed out at {deadline}")]
    TimedOut {
        /// The agreement's id.
        agreement: B256,
        /// The condition's key.
        condition: B256,
        /// The deadline, in Unix seconds.
        deadline: u64,
    },
    /// The parameters given do not hash to the condition's signed values hash.
    #[error("the parameters of condition {condition} are not what the consumer signed for agreement {agreement}")]
    ValuesMismatch {
        /// The agreement's id.
        agreement: B256,
        /// The condition's key.
        condition: B256,
    },
    /// The caller is not the party of the agreement that may do this.
    #[error("{caller} is not the party of agreement {agreement} that may do this")]
    NotParty {
        /// The agreement's id.
        agreement: B256,
        /// Who called.
        caller: Address,
    },
    /// The escrow refused the receipt of a release.
    #[error("the receipt does not match agreement {agreement}: {reason:?}")]
    ReceiptMismatch {
        /// The agreement's id.
        agreement: B256,
        /// Which check failed.
        reason: ReceiptCheck,
    },
    /// No deadline that allows a refund has passed.
    #[error("agreement {agreement} cannot be refunded: no deadline has passed")]
    NotRefundable {
        /// The agreement's id.
        agreement: B256,
    },
    /// Outputs are published only after the payment is released.
    #[error("the payment of agreement {agreement} is not released")]
    NotReleased {
        /// The agreement's id.
        agreement: B256,
    },
    /// The agreement's outputs are published already.
    #[error("the outputs of agreement {agreement} are published already as {output_did}")]
    OutputAlreadyPublished {
        /// The agreement's id.
        agreement: B256,
        /// The DID they were published as.
        output_did: B256,
    },
    /// Only the DID's owner may update it.
    #[error("{caller} does not own DID {did}")]
    NotOwner {
        /// The DID.
        did: B256,
        /// Who tried.
        caller: Address,
    },
    /// The account's token balance is too small.
    #[error("{account} holds {balance} tokens, {needed} needed")]
    InsufficientBalance {
        /// The account.
        account: Address,
        /// What it holds.
        balance: U256,
        /// What the call needed.
        needed: U256,
    },
    /// The spender's allowance is too small.
    #[error("{spender} may spend {allowance} tokens, {needed} needed")]
    InsufficientAllowance {
        /// The spender (the escrow, for a lock).
        spender: Address,
        /// What it may spend.
        allowance: U256,
        /// What the call needed.
        needed: U256,
    },
    /// The token refused a transfer (returned false).
    #[error("the token refused a transfer")]
    TransferFailed,

    // Other reverts.
    /// A revert with a reason string or a panic code.
    #[error("reverted: {reason}")]
    Reverted {
        /// The reason, or the panic, in words.
        reason: String,
    },
    /// A revert whose data is none of the contracts' errors, no string and no panic.
    #[error("reverted with data the contracts' ABI does not decode: {data}")]
    UnknownRevert {
        /// The revert data.
        data: Bytes,
    },
    /// A mined transaction reverted, and replaying it as a call gave no reason.
    #[error("transaction {tx_hash} reverted (no reason could be read back)")]
    RevertedWithoutReason {
        /// The transaction.
        tx_hash: B256,
    },

    // The node and the connection.
    /// The RPC request failed.
    #[error("RPC transport{}", if *transient { " (transient)" } else { "" })]
    Transport {
        /// alloy's error.
        #[source]
        source: TransportError,
        /// True when trying again may succeed (see [`ChainError::is_transient`]).
        transient: bool,
    },
    /// The transaction was submitted but no receipt came in time.
    #[error("no receipt for transaction {tx_hash} after {waited_ms} ms")]
    ReceiptTimeout {
        /// The transaction.
        tx_hash: B256,
        /// How long it was awaited, in milliseconds.
        waited_ms: u64,
    },
    /// The node's answer does not decode as the ABI says.
    #[error("the node returned what the contracts' ABI does not decode")]
    Decode(#[source] alloy::sol_types::Error),
    /// The node is not on the chain the contracts file is for.
    #[error("the node is on chain {found}, the contracts file is for chain {expected}")]
    WrongChain {
        /// The contracts file's chain id.
        expected: u64,
        /// The node's.
        found: u64,
    },
    /// A contract of the contracts file has no code on the node.
    #[error("no contract code at {address} ({name})")]
    NoCode {
        /// The contract's name.
        name: &'static str,
        /// Its address in the contracts file.
        address: Address,
    },
    /// Something given or returned is not usable: an argument, a configuration value, an
    /// answer without what it should hold.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The contracts file cannot be read, written or parsed.
    #[error("contracts file {path}")]
    ContractsFile {
        /// Its path.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The key could not sign.
    #[error("signing")]
    Signing(#[source] alloy::signers::Error),
    /// The local anvil node could not be started or did not answer.
    #[error("anvil: {0}")]
    Anvil(String),
}

impl ChainError {
    /// True for errors that may go away if the same request is tried again (connection
    /// refused or reset, HTTP 5xx and 429, rate limits). Such errors are retried with backoff
    /// before they reach a caller.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Transport { transient: true, .. })
    }

    /// The decoded revert, if `data` is one of the contracts' errors, `Error(string)` or a
    /// panic.
    pub fn from_revert_data(data: &[u8]) -> ChainError {
        if let Ok(e) = Revert::abi_decode(data) {
            return e.into();
        }
        match GenericContractError::abi_decode(data) {
            Ok(reason) => ChainError::Reverted { reason: reason.to_string() },
            Err(_) => ChainError::UnknownRevert { data: Bytes::copy_from_slice(data) },
        }
    }

    /// A transport error: a revert if it carries revert data, else transient or not.
    pub fn from_transport(e: TransportError) -> ChainError {
        if let Some(data) = e.as_error_resp().and_then(|p| p.as_revert_data()) {
            return ChainError::from_revert_data(&data);
        }
        let transient = match &e {
            RpcError::Transport(kind) => transport_kind_is_transient(kind),
            RpcError::ErrorResp(payload) => payload.is_retry_err(),
            RpcError::NullResp => true,
            _ => false,
        };
        ChainError::Transport { source: e, transient }
    }
}

fn transport_kind_is_transient(kind: &TransportErrorKind) -> bool {
    match kind {
        // Connection refused or reset, timeouts: our transport reports those as custom errors.
        TransportErrorKind::Custom(_) | TransportErrorKind::BackendGone => true,
        TransportErrorKind::HttpError(h) => h.status == 429 || h.status >= 500,
        other => other.is_retry_err(),
    }
}

impl From<TransportError> for ChainError {
    fn from(e: TransportError) -> Self {
        ChainError::from_transport(e)
    }
}

impl From<alloy::sol_types::Error> for ChainError {
    fn from(e: alloy::sol_types::Error) -> Self {
        ChainError::Decode(e)
    }
}

impl From<Revert> for ChainError {
    fn from(e: Revert) -> Self {
        use ChainError as C;
        match e {
            Revert::AlreadyExists(e) => C::AlreadyExists { id: e.id },
            Revert::NotFound(e) => C::NotFound { id: e.id },
            Revert::Unauthorized(e) => C::Unauthorized { caller: e.caller },
            Revert::InvalidTemplate(e) => C::InvalidTemplate { index: e.index },
            Revert::LengthMismatch(e) => C::LengthMismatch { expected: e.expected, found: e.found },
            Revert::ConditionKeyMismatch(e) => {
                C::ConditionKeyMismatch { index: e.index, expected: e.expected, found: e.found }
            }
            Revert::InvalidTimeout(e) => C::InvalidTimeout { index: e.index },
            Revert::InvalidSignature(_) => C::InvalidSignature,
            Revert::NotControlContract(e) => C::NotControlContract { agreement: e.agreementId, caller: e.caller },
            Revert::AgreementClosed(e) => C::AgreementClosed { agreement: e.agreementId },
            Revert::AlreadyFulfilled(e) => C::AlreadyFulfilled { agreement: e.agreementId, condition: e.condition },
            Revert::DependencyUnfulfilled(e) => {
                C::DependencyUnfulfilled { agreement: e.agreementId, condition: e.condition, dependency: e.dependency }
            }
            Revert::TimedOut(e) => {
                C::TimedOut { agreement: e.agreementId, condition: e.condition, deadline: e.deadline }
            }
            Revert::ValuesMismatch(e) => C::ValuesMismatch { agreement: e.agreementId, condition: e.condition },
            Revert::NotParty(e) => C::NotParty { agreement: e.agreementId, caller: e.caller },
            Revert::ReceiptMismatch(e) => C::ReceiptMismatch { agreement: e.agreementId, reason: e.reason.into() },
            Revert::NotRefundable(e) => C::NotRefundable { agreement: e.agreementId },
            Revert::NotReleased(e) => C::NotReleased { agreement: e.agreementId },
            Revert::OutputAlreadyPublished(e) => {
                C::OutputAlreadyPublished { agreement: e.agreementId, output_did: e.outputDid }
            }
            Revert::NotOwner(e) => C::NotOwner { did: e.did, caller: e.caller },
            Revert::InsufficientBalance(e) => {
                C::InsufficientBalance { account: e.account, balance: e.balance, needed: e.needed }
            }
            Revert::InsufficientAllowance(e) => {
                C::InsufficientAllowance { spender: e.spender, allowance: e.allowance, needed: e.needed }
            }
            Revert::TransferFailed(_) => C::TransferFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::sol_types::SolError;

    use super::*;
    use crate::bindings::TidepoolErrors;

    #[test]
    fn reverts_decode_into_typed_variants() {
        let data = TidepoolErrors::ReceiptMismatch { agreementId: B256::repeat_byte(1), reason: 4 }.abi_encode();
        assert!(matches!(
            ChainError::from_revert_data(&data),
            ChainError::ReceiptMismatch { reason: ReceiptCheck::Fuel, agreement } if agreement == B256::repeat_byte(1)
        ));
        let data = alloy::sol_types::Revert::from("plain string").abi_encode();
        assert!(
            matches!(ChainError::from_revert_data(&data), ChainError::Reverted { reason } if reason.contains("plain string"))
        );
        assert!(matches!(ChainError::from_revert_data(&[1, 2, 3, 4]), ChainError::UnknownRevert { .. }));
    }

    #[test]
    fn transport_errors_are_classified() {
        assert!(ChainError::from_transport(TransportErrorKind::http_error(503, "busy".into())).is_transient());
        assert!(!ChainError::from_transport(TransportErrorKind::http_error(400, "bad".into())).is_transient());
        assert!(ChainError::from_transport(TransportErrorKind::custom_str("connection refused")).is_transient());
    }
}
