// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "../TidepoolErrors.sol";
import {AgreementStore} from "../AgreementStore.sol";

/// @title The `grantCompute` condition: the provider lets the consumer run the job
/// @notice Fulfillable once the payment is locked and the algorithm uploaded (the template's
///         dependencies). Values hash: `keccak256(abi.encode(consumer, did))`.
contract ComputeGrantCondition is TidepoolErrors {
    AgreementStore public immutable store;

    event ComputeGranted(bytes32 indexed agreementId, address consumer);

    constructor(AgreementStore store_) {
        store = store_;
    }

    function grantCompute(bytes32 agreementId, address consumer) external {
        (, bytes32 did,, address provider,) = store.parties(agreementId);
        if (msg.sender != provider) revert NotParty(agreementId, msg.sender);
        store.fulfillCondition(agreementId, this.grantCompute.selector, keccak256(abi.encode(consumer, did)));
        emit ComputeGranted(agreementId, consumer);
    }

    /// True while `consumer` may run the agreement's job: compute is granted to it and the
    /// payment is neither released nor refunded. Reverts `NotFound` for an unknown agreement.
    function checkPermissions(bytes32 agreementId, address consumer) external view returns (bool) {
        (,, address party,, AgreementStore.AgreementStatus status) = store.parties(agreementId);
        if (consumer != party || status != AgreementStore.AgreementStatus.Active) {
            return false;
        }
        (AgreementStore.ConditionStatus granted,) =
            store.conditionState(agreementId, address(this), this.grantCompute.selector);
        return granted == AgreementStore.ConditionStatus.Fulfilled;
    }
}
