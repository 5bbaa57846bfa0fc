// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "../TidepoolErrors.sol";
import {AgreementStore} from "../AgreementStore.sol";
import {DIDRegistry} from "../DIDRegistry.sol";
import {IERC20, SafeTransfer} from "../IERC20.sol";
import {Input, Receipt, ReceiptHash} from "../Receipt.sol";
import {ComputeUploadCondition} from "./ComputeUploadCondition.sol";
import {ComputeGrantCondition} from "./ComputeGrantCondition.sol";

/// @title The escrow and its two conditions: `releasePayment` and `refundPayment`
/// @notice Holds the tokens each agreement's consumer locked (`deposit`, called by the
///         `lockPayment` condition) until one of:
///
///         * `releasePayment` (the provider, once compute was granted): takes the execution
///           receipt's hashed fields, checks that the receipt belongs to the agreement (its
///           version; its algorithm is the one the consumer signed at upload; its inputs are
///           the asset's datasets as the DID registry holds them; its fuel is at most the
///           maximum), recomputes its EIP-712 hash, stores it, and pays the provider
///           `fuelConsumed × pricePerFuel` and the consumer the rest. Values hash:
///           `keccak256(abi.encode(provider, pricePerFuel, maxFuel × pricePerFuel))`.
///         * `refundPayment` (the consumer, once `grantCompute` or `releasePayment` is past its
///           deadline unfulfilled): returns everything. Values hash:
///           `keccak256(abi.encode(consumer, amount))`.
///
///         After a release the provider publishes the outputs (`publishOutput`): a new DID
///         owned by the consumer whose checksum binds the receipt's `outputsRoot`.
contract EscrowReward is TidepoolErrors {
    using SafeTransfer for IERC20;

    /// The name of an output asset's one dataset (its checksum is that dataset's).
    string public constant OUTPUT_DATASET = "outputs";

    AgreementStore public immutable store;
    IERC20 public immutable token;
    DIDRegistry public immutable registry;
    ComputeUploadCondition public immutable uploadCondition;
    ComputeGrantCondition public immutable grantCondition;

    /// Tokens held for each agreement.
    mapping(bytes32 agreementId => uint256) public locked;
    /// The hash of the receipt each agreement's payment was released for.
    mapping(bytes32 agreementId => bytes32) public receiptHashOf;
    /// The receipt's outputs root, which the output asset must be.
    mapping(bytes32 agreementId => bytes32) public outputsRootOf;
    mapping(bytes32 agreementId => bytes32) public outputDidOf;

    event PaymentReleased(
        bytes32 indexed agreementId, bytes32 receiptHash, uint256 providerAmount, uint256 consumerRefund
    );
    event PaymentRefund(bytes32 indexed agreementId, uint256 amount);
    event OutputPublished(bytes32 indexed agreementId, bytes32 outputDid);

    constructor(
        AgreementStore store_,
        IERC20 token_,
        DIDRegistry registry_,
        ComputeUploadCondition uploadCondition_,
        ComputeGrantCondition grantCondition_
    ) {
        if (address(token_).code.length == 0) revert NotFound(bytes32(uint256(uint160(address(token_)))));
        store = store_;
        token = token_;
        registry = registry_;
        uploadCondition = uploadCondition_;
        grantCondition = grantCondition_;
    }

    /// Takes `amount` from `from` (who approved this contract) into the agreement's escrow.
    /// Only the agreements' control contracts may call it (the `lockPayment` condition does).
    function deposit(bytes32 agreementId, address from, uint256 amount) external {
        if (!store.isControlContract(msg.sender)) revert Unauthorized(msg.sender);
        locked[agreementId] += amount;
        token.pull(from, address(this), amount);
    }

    function releasePayment(bytes32 agreementId, uint256 pricePerFuel, uint64 maxFuel, Receipt calldata receipt)
        external
    {
        (, bytes32 did, address consumer, address provider,) = store.parties(agreementId);
        if (msg.sender != provider) revert NotParty(agreementId, msg.sender);
        uint256 amount = pricePerFuel * maxFuel;
        // First the agreement (dependencies, deadline, signed terms), then the receipt.
        store.fulfillCondition(
            agreementId, this.releasePayment.selector, keccak256(abi.encode(provider, pricePerFuel, amount))
        );
        checkReceipt(agreementId, did, maxFuel, receipt);
        bytes32 receiptHash = ReceiptHash.hash(receipt);

        uint256 escrowed = locked[agreementId];
        uint256 providerAmount = uint256(receipt.fuelConsumed) * pricePerFuel;
        if (providerAmount > escrowed) {
            // Only if the consumer signed a lock of less than `amount`.
            providerAmount = escrowed;
        }
        uint256 consumerRefund = escrowed - providerAmount;
        locked[agreementId] = 0;
        receiptHashOf[agreementId] = receiptHash;
        outputsRootOf[agreementId] = receipt.outputsRoot;
        if (providerAmount != 0) token.push(provider, providerAmount);
        if (consumerRefund != 0) token.push(consumer, consumerRefund);
        emit PaymentReleased(agreementId, receiptHash, providerAmount, consumerRefund);
    }

    /// The EIP-712 `hashStruct` of a receipt, as `releasePayment` computes and commits it: an
    /// auditor compares it with `receiptHashOf` (and any client with its own computation).
    function hashReceipt(Receipt calldata receipt) external pure returns (bytes32) {
        return ReceiptHash.hash(receipt);
    }

    /// Refuses a receipt that is not of this agreement's job, whatever the provider claims.
    function checkReceipt(bytes32 agreementId, bytes32 did, uint64 maxFuel, Receipt calldata receipt) private view {
        if (receipt.version != ReceiptHash.VERSION) revert ReceiptMismatch(agreementId, ReceiptCheck.Version);
        if (receipt.algorithmHash != uploadCondition.algorithmHashOf(agreementId)) {
            revert ReceiptMismatch(agreementId, ReceiptCheck.Algorithm);
        }
        if (ReceiptHash.hashInputs(receipt.inputs) != registry.checksumOf(did)) {
            revert ReceiptMismatch(agreementId, ReceiptCheck.Inputs);
        }
        if (receipt.fuelConsumed > maxFuel) revert ReceiptMismatch(agreementId, ReceiptCheck.Fuel);
    }

    function refundPayment(bytes32 agreementId) external {
        (,, address consumer,, AgreementStore.AgreementStatus status) = store.parties(agreementId);
        if (msg.sender != consumer) revert NotParty(agreementId, msg.sender);
        if (status != AgreementStore.AgreementStatus.Active) revert AgreementClosed(agreementId);
        if (
            !missed(agreementId, address(grantCondition), ComputeGrantCondition.grantCompute.selector)
                && !missed(agreementId, address(this), this.releasePayment.selector)
        ) {
            revert NotRefundable(agreementId);
        }
        uint256 amount = locked[agreementId];
        store.fulfillCondition(agreementId, this.refundPayment.selector, keccak256(abi.encode(consumer, amount)));
        locked[agreementId] = 0;
        if (amount != 0) token.push(consumer, amount);
        emit PaymentRefund(agreementId, amount);
    }

    /// True when the condition is unfulfilled and its deadline has passed.
    function missed(bytes32 agreementId, address controlContract, bytes4 selector) private view returns (bool) {
        (AgreementStore.ConditionStatus status, uint64 deadline) =
            store.conditionState(agreementId, controlContract, selector);
        return status == AgreementStore.ConditionStatus.Unfulfilled && deadline != 0 && block.timestamp > deadline;
    }

    /// Registers the outputs of a released agreement as a new asset owned by its consumer.
    /// Its checksum is that of one dataset, `outputs`, whose root is the receipt's.
    function publishOutput(bytes32 agreementId, bytes32 outputDid, string calldata url) external {
        (,, address consumer, address provider,) = store.parties(agreementId);
        if (msg.sender != provider) revert NotParty(agreementId, msg.sender);
        if (receiptHashOf[agreementId] == bytes32(0)) revert NotReleased(agreementId);
        if (outputDidOf[agreementId] != bytes32(0)) {
            revert OutputAlreadyPublished(agreementId, outputDidOf[agreementId]);
        }
        bytes32 dataset = keccak256(
            abi.encode(ReceiptHash.INPUT_TYPEHASH, keccak256(bytes(OUTPUT_DATASET)), outputsRootOf[agreementId])
        );
        registry.registerAttributeFor(outputDid, consumer, keccak256(abi.encodePacked(dataset)), url);
        outputDidOf[agreementId] = outputDid;
        emit OutputPublished(agreementId, outputDid);
    }
}
