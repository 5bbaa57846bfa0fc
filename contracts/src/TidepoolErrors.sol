// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The errors every Tidepool contract reverts with
/// @notice Declared once so that a client decodes any revert of any of the contracts with one
///         ABI (`contracts/artifacts/TidepoolErrors.json`). Each contract inherits this
///         interface; none of them reverts with a string.
interface TidepoolErrors {
    /// Why a release's receipt does not belong to its agreement (`ReceiptMismatch.reason`).
    enum ReceiptCheck {
        /// Unused: keeps 0 from meaning anything.
        None,
        /// `receipt.version` is not the version whose hash the contract computes.
        Version,
        /// `receipt.algorithmHash` is not the hash the consumer signed at upload.
        Algorithm,
        /// `receipt.inputs` do not hash to the checksum the DID registry holds for the asset.
        Inputs,
        /// `receipt.fuelConsumed` is more than the agreement's maximum fuel.
        Fuel
    }

    /// An agreement, template or DID with this id exists already.
    error AlreadyExists(bytes32 id);
    /// No agreement, template or DID with this id.
    error NotFound(bytes32 id);
    /// Only the owner (deployer) may do this.
    error Unauthorized(address caller);
    /// A template's definition is malformed (`index`: the offending condition).
    error InvalidTemplate(uint256 index);
    /// The agreement's lists do not have one entry per condition of its template.
    error LengthMismatch(uint256 expected, uint256 found);
    /// A signed condition key is not the one the template defines at this position.
    error ConditionKeyMismatch(uint256 index, bytes32 expected, bytes32 found);
    /// A timeout does not fit in 64 bits.
    error InvalidTimeout(uint256 index);
    /// The signature is malformed or was not made by the expected signer.
    error InvalidSignature();
    /// The caller is not the control contract of any condition of this agreement with that
    /// function (the SLA text's `isValidControlContract`).
    error NotControlContract(bytes32 agreementId, address caller);
    /// The agreement is closed (released or refunded): no condition can change any more.
    error AgreementClosed(bytes32 agreementId);
    /// The condition is fulfilled already.
    error AlreadyFulfilled(bytes32 agreementId, bytes32 condition);
    /// A dependency of the condition is not fulfilled yet.
    error DependencyUnfulfilled(bytes32 agreementId, bytes32 condition, bytes32 dependency);
    /// The condition's deadline has passed.
    error TimedOut(bytes32 agreementId, bytes32 condition, uint64 deadline);
    /// The parameters given do not hash to the condition's signed values hash.
    error ValuesMismatch(bytes32 agreementId, bytes32 condition);
    /// The caller is not the party of the agreement that may do this.
    error NotParty(bytes32 agreementId, address caller);
    /// The receipt does not match the agreement (see `ReceiptCheck`).
    error ReceiptMismatch(bytes32 agreementId, ReceiptCheck reason);
    /// No deadline that allows a refund has passed.
    error NotRefundable(bytes32 agreementId);
    /// Outputs are published only after the payment is released.
    error NotReleased(bytes32 agreementId);
    /// The agreement's outputs are published already, as `outputDid`.
    error OutputAlreadyPublished(bytes32 agreementId, bytes32 outputDid);
    /// Only the DID's owner may update it.
    error NotOwner(bytes32 did, address caller);
    /// The account's token balance is too small.
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// The spender's allowance is too small.
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    /// The token refused a transfer (returned false).
    error TransferFailed();
}
