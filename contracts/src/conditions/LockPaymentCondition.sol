// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "../TidepoolErrors.sol";
import {AgreementStore} from "../AgreementStore.sol";
import {EscrowReward} from "./EscrowReward.sol";

/// @title The `lockPayment` condition: the consumer puts the price of the maximum fuel in escrow
/// @notice The consumer calls it from its own wallet after approving the escrow
///         (`EscrowReward`) for `amount`; the tokens go from the consumer to the escrow, never
///         through the provider. Values hash: `keccak256(abi.encode(provider, amount))`.
contract LockPaymentCondition is TidepoolErrors {
    AgreementStore public immutable store;
    EscrowReward public immutable escrow;

    event PaymentLocked(bytes32 indexed agreementId, uint256 amount);

    constructor(AgreementStore store_, EscrowReward escrow_) {
        store = store_;
        escrow = escrow_;
    }

    function lockPayment(bytes32 agreementId, address provider, uint256 amount) external {
        (,, address consumer,,) = store.parties(agreementId);
        if (msg.sender != consumer) revert NotParty(agreementId, msg.sender);
        store.fulfillCondition(agreementId, this.lockPayment.selector, keccak256(abi.encode(provider, amount)));
        escrow.deposit(agreementId, consumer, amount);
        emit PaymentLocked(agreementId, amount);
    }
}
