// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "../TidepoolErrors.sol";
import {AgreementStore} from "../AgreementStore.sol";
import {Signatures} from "../Signatures.sol";

/// @title The `uploadAlgorithm` condition: the algorithm the consumer signed for
/// @notice The provider calls it once it holds the consumer's algorithm, with the consumer's
///         EIP-712 `Algorithm(serviceAgreementId, algorithmHash)` signature (under the store's
///         domain), checked here with `ecrecover`. The hash is kept: the escrow refuses a
///         receipt of any other algorithm. Values hash: `keccak256(abi.encode(did, consumer))`.
contract ComputeUploadCondition is TidepoolErrors {
    bytes32 public constant ALGORITHM_TYPEHASH = keccak256("Algorithm(bytes32 serviceAgreementId,bytes32 algorithmHash)");

    AgreementStore public immutable store;
    /// The algorithm fulfilled for each agreement (BLAKE3 of the module, as receipts say).
    mapping(bytes32 agreementId => bytes32) public algorithmHashOf;

    event FulfillUpload(bytes32 indexed agreementId, bytes32 algorithmHash);

    constructor(AgreementStore store_) {
        store = store_;
    }

    function fulfillUpload(bytes32 agreementId, bytes32 algorithmHash, bytes calldata signature) external {
        (, bytes32 did, address consumer, address provider,) = store.parties(agreementId);
        if (msg.sender != provider) revert NotParty(agreementId, msg.sender);
        bytes32 structHash = keccak256(abi.encode(ALGORITHM_TYPEHASH, agreementId, algorithmHash));
        address signer = Signatures.recover(Signatures.typedDataDigest(store.domainSeparator(), structHash), signature);
        if (signer == address(0) || signer != consumer) revert InvalidSignature();
        store.fulfillCondition(agreementId, this.fulfillUpload.selector, keccak256(abi.encode(did, consumer)));
        algorithmHashOf[agreementId] = algorithmHash;
        emit FulfillUpload(agreementId, algorithmHash);
    }
}
