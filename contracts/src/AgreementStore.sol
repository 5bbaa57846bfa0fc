// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "./TidepoolErrors.sol";
import {Signatures} from "./Signatures.sol";

/// @title The storage contract of Service Execution Agreements (OEP-12)
/// @notice Holds the templates, the agreements and the state of their conditions; it moves no
///         token and knows nothing of what a condition means. That is the control contracts'
///         business (the SLA text's storage-control pattern): a condition changes only when its
///         control contract calls `fulfillCondition`, once its dependencies are fulfilled and
///         before its deadline (the SLA text's `isValidControlContract`).
///
///         A template lists its conditions in order, each with its control contract, the
///         selector of the function that fulfills it, the indices of the conditions it depends
///         on (earlier ones only, so the graph has no cycle) and whether fulfilling it closes
///         the agreement. A condition's key is
///         `keccak256(abi.encodePacked(templateId, controlContract, selector))`, as a DDO lists
///         it. What is the same for every agreement of a template (control contract,
///         dependencies) is stored once with the template; an agreement stores per condition
///         only its status, deadline and signed values hash.
///
///         Consumer signatures are EIP-712 typed data under this contract's domain:
///         `{name: "Tidepool", version: "1", chainId, verifyingContract: this}`. The control
///         contracts verify theirs under the same domain (`domainSeparator()`).
contract AgreementStore is TidepoolErrors {
    /// One condition of a template: the SLA text's `Condition` less what varies per agreement.
    struct ConditionTemplate {
        address controlContract;
        bytes4 selector;
        /// Indices of the conditions this one depends on; each less than this one's index.
        uint8[] dependencies;
        /// Fulfilling this condition closes the agreement (payment released or refunded).
        bool closesAgreement;
    }

    enum ConditionStatus {
        Unfulfilled,
        Fulfilled
    }

    enum AgreementStatus {
        None,
        Active,
        Closed
    }

    /// One condition of one agreement.
    struct ConditionState {
        bytes32 valuesHash;
        /// Creation time plus the signed timeout; 0 for no deadline.
        uint64 deadline;
        uint64 fulfilledAt;
        ConditionStatus status;
    }

    /// One agreement (the SLA text's `ServiceAgreement`: status, parties, conditions).
    struct Agreement {
        bytes32 templateId;
        bytes32 did;
        address consumer;
        uint64 createdAt;
        AgreementStatus status;
        address provider;
        /// Indexed like the template's conditions.
        ConditionState[] conditions;
    }

    /// A condition as `getCondition` returns it: the template's part and the agreement's.
    struct ConditionView {
        bytes32 key;
        ConditionStatus status;
        address controlContract;
        bytes32[] dependencies;
        uint64 timeout;
        uint64 deadline;
        uint64 fulfilledAt;
        bytes32 valuesHash;
    }

    /// An agreement as `getAgreement` returns it.
    struct AgreementView {
        AgreementStatus status;
        bytes32 templateId;
        bytes32 did;
        /// `[consumer, provider]`.
        address[] parties;
        uint64 createdAt;
        ConditionView[] conditions;
    }

    bytes32 public constant SERVICE_AGREEMENT_TYPEHASH = keccak256(
        "ServiceAgreement(bytes32 templateId,bytes32[] conditionKeys,bytes32[] valuesHashList,uint256[] timeouts,bytes32 serviceAgreementId)"
    );
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// The deployer: the only account that may register templates.
    address public immutable owner;
    uint256 private immutable deployedChainId;
    bytes32 private immutable deployedDomainSeparator;

    mapping(bytes32 templateId => ConditionTemplate[]) private templates;
    /// Condition key to its index in the template, plus one (0: not a condition of it).
    mapping(bytes32 templateId => mapping(bytes32 key => uint256)) private conditionIndex;
    /// Every control contract of every template (they may act for any of its agreements).
    mapping(address => bool) public isControlContract;
    mapping(bytes32 agreementId => Agreement) private agreements;

    event TemplateRegistered(bytes32 indexed templateId, bytes32[] conditionKeys);
    event ExecuteAgreement(bytes32 indexed agreementId, bytes32 did, address consumer, address provider);

    constructor() {
        owner = msg.sender;
        deployedChainId = block.chainid;
        deployedDomainSeparator = buildDomainSeparator();
    }

    // ---------------------------------------------------------------------------------------
    // Templates

    /// Registers a template once; its conditions can never change (a new version is a new id).
    function registerTemplate(bytes32 templateId, ConditionTemplate[] calldata conditions) external {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        if (templates[templateId].length != 0) revert AlreadyExists(templateId);
        if (conditions.length == 0 || conditions.length > 255) revert InvalidTemplate(conditions.length);
        bytes32[] memory keys = new bytes32[](conditions.length);
        ConditionTemplate[] storage stored = templates[templateId];
        for (uint256 i = 0; i < conditions.length; i++) {
            ConditionTemplate calldata c = conditions[i];
            if (c.controlContract == address(0)) revert InvalidTemplate(i);
            for (uint256 d = 0; d < c.dependencies.length; d++) {
                if (c.dependencies[d] >= i) revert InvalidTemplate(i);
            }
            bytes32 key = conditionKey(templateId, c.controlContract, c.selector);
            if (conditionIndex[templateId][key] != 0) revert InvalidTemplate(i);
            conditionIndex[templateId][key] = i + 1;
            keys[i] = key;
            stored.push(c);
            isControlContract[c.controlContract] = true;
        }
        emit TemplateRegistered(templateId, keys);
    }

    /// `keccak256(abi.encodePacked(templateId, controlContract, selector))`.
    function conditionKey(bytes32 templateId, address controlContract, bytes4 selector) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(templateId, controlContract, selector));
    }

    /// The keys of a template's conditions, in order.
    function templateConditionKeys(bytes32 templateId) public view returns (bytes32[] memory keys) {
        ConditionTemplate[] storage t = templates[templateId];
        if (t.length == 0) revert NotFound(templateId);
        keys = new bytes32[](t.length);
        for (uint256 i = 0; i < t.length; i++) {
            keys[i] = conditionKey(templateId, t[i].controlContract, t[i].selector);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Agreements

    /// Creates an agreement between `consumer` and the caller (the provider) on a template,
    /// from the consumer's EIP-712 `ServiceAgreement` signature. The condition keys must be
    /// the template's, in its order; the values hashes and timeouts are what the consumer
    /// signed. Each id can be used once.
    function initializeAgreement(
        bytes32 agreementId,
        bytes32 templateId,
        bytes32 did,
        address consumer,
        bytes32[] calldata conditionKeys,
        bytes32[] calldata valuesHashList,
        uint256[] calldata timeouts,
        bytes calldata signature
    ) external {
        if (agreements[agreementId].status != AgreementStatus.None) revert AlreadyExists(agreementId);
        bytes32[] memory expected = templateConditionKeys(templateId);
        uint256 n = expected.length;
        if (conditionKeys.length != n) revert LengthMismatch(n, conditionKeys.length);
        if (valuesHashList.length != n) revert LengthMismatch(n, valuesHashList.length);
        if (timeouts.length != n) revert LengthMismatch(n, timeouts.length);
        for (uint256 i = 0; i < n; i++) {
            if (conditionKeys[i] != expected[i]) revert ConditionKeyMismatch(i, expected[i], conditionKeys[i]);
            if (timeouts[i] > type(uint64).max - block.timestamp) revert InvalidTimeout(i);
        }

        bytes32 structHash = keccak256(
            abi.encode(
                SERVICE_AGREEMENT_TYPEHASH,
                templateId,
                keccak256(abi.encodePacked(conditionKeys)),
                keccak256(abi.encodePacked(valuesHashList)),
                keccak256(abi.encodePacked(timeouts)),
                agreementId
            )
        );
        address signer = Signatures.recover(Signatures.typedDataDigest(domainSeparator(), structHash), signature);
        if (signer == address(0) || signer != consumer) revert InvalidSignature();

        Agreement storage a = agreements[agreementId];
        a.templateId = templateId;
        a.did = did;
        a.consumer = consumer;
        a.createdAt = uint64(block.timestamp);
        a.status = AgreementStatus.Active;
        a.provider = msg.sender;
        for (uint256 i = 0; i < n; i++) {
            ConditionState storage c = a.conditions.push();
            c.valuesHash = valuesHashList[i];
            if (timeouts[i] != 0) {
                c.deadline = uint64(block.timestamp + timeouts[i]);
            }
        }
        emit ExecuteAgreement(agreementId, did, consumer, msg.sender);
    }

    /// Fulfills the caller's condition of an agreement, if `valuesHash` (which the control
    /// contract computes from the parameters it was given) is the one the consumer signed.
    /// Closes the agreement if the template says so.
    function fulfillCondition(bytes32 agreementId, bytes4 selector, bytes32 valuesHash) external {
        (Agreement storage a, uint256 index, bytes32 key) = isValidControlContract(agreementId, selector);
        ConditionState storage c = a.conditions[index];
        if (c.valuesHash != valuesHash) revert ValuesMismatch(agreementId, key);
        c.status = ConditionStatus.Fulfilled;
        c.fulfilledAt = uint64(block.timestamp);
        if (templates[a.templateId][index].closesAgreement) {
            a.status = AgreementStatus.Closed;
        }
    }

    /// The SLA text's `isValidControlContract` modifier, as a function so that it can hand
    /// the condition it found to its caller: the caller, with the function `selector`, is the
    /// control contract of a condition of this agreement; the agreement is open; the condition
    /// is not fulfilled yet, every dependency is, and its deadline has not passed.
    function isValidControlContract(bytes32 agreementId, bytes4 selector)
        private
        view
        returns (Agreement storage a, uint256 index, bytes32 key)
    {
        a = agreements[agreementId];
        if (a.status == AgreementStatus.None) revert NotFound(agreementId);
        if (a.status == AgreementStatus.Closed) revert AgreementClosed(agreementId);
        key = conditionKey(a.templateId, msg.sender, selector);
        index = conditionIndex[a.templateId][key];
        if (index == 0) revert NotControlContract(agreementId, msg.sender);
        index -= 1;
        ConditionState storage c = a.conditions[index];
        if (c.status == ConditionStatus.Fulfilled) revert AlreadyFulfilled(agreementId, key);
        ConditionTemplate storage t = templates[a.templateId][index];
        for (uint256 d = 0; d < t.dependencies.length; d++) {
            uint8 dep = t.dependencies[d];
            if (a.conditions[dep].status != ConditionStatus.Fulfilled) {
                ConditionTemplate storage dt = templates[a.templateId][dep];
                revert DependencyUnfulfilled(agreementId, key, conditionKey(a.templateId, dt.controlContract, dt.selector));
            }
        }
        if (c.deadline != 0 && block.timestamp > c.deadline) revert TimedOut(agreementId, key, c.deadline);
    }

    // ---------------------------------------------------------------------------------------
    // Views

    /// The parties and asset of an agreement, for the control contracts (one call).
    function parties(bytes32 agreementId)
        external
        view
        returns (bytes32 templateId, bytes32 did, address consumer, address provider, AgreementStatus status)
    {
        Agreement storage a = agreements[agreementId];
        if (a.status == AgreementStatus.None) revert NotFound(agreementId);
        return (a.templateId, a.did, a.consumer, a.provider, a.status);
    }

    /// The status and deadline of the condition `(controlContract, selector)` of an agreement.
    function conditionState(bytes32 agreementId, address controlContract, bytes4 selector)
        external
        view
        returns (ConditionStatus status, uint64 deadline)
    {
        Agreement storage a = agreements[agreementId];
        if (a.status == AgreementStatus.None) revert NotFound(agreementId);
        bytes32 key = conditionKey(a.templateId, controlContract, selector);
        uint256 index = conditionIndex[a.templateId][key];
        if (index == 0) revert NotFound(key);
        ConditionState storage c = a.conditions[index - 1];
        return (c.status, c.deadline);
    }

    /// An agreement with all its conditions.
    function getAgreement(bytes32 agreementId) external view returns (AgreementView memory v) {
        Agreement storage a = agreements[agreementId];
        if (a.status == AgreementStatus.None) revert NotFound(agreementId);
        v.status = a.status;
        v.templateId = a.templateId;
        v.did = a.did;
        v.parties = new address[](2);
        v.parties[0] = a.consumer;
        v.parties[1] = a.provider;
        v.createdAt = a.createdAt;
        ConditionTemplate[] storage t = templates[a.templateId];
        v.conditions = new ConditionView[](t.length);
        for (uint256 i = 0; i < t.length; i++) {
            ConditionState storage c = a.conditions[i];
            ConditionView memory cv = v.conditions[i];
            cv.key = conditionKey(a.templateId, t[i].controlContract, t[i].selector);
            cv.status = c.status;
            cv.controlContract = t[i].controlContract;
            cv.dependencies = new bytes32[](t[i].dependencies.length);
            for (uint256 d = 0; d < t[i].dependencies.length; d++) {
                ConditionTemplate storage dt = t[t[i].dependencies[d]];
                cv.dependencies[d] = conditionKey(a.templateId, dt.controlContract, dt.selector);
            }
            cv.deadline = c.deadline;
            cv.timeout = c.deadline == 0 ? 0 : c.deadline - a.createdAt;
            cv.fulfilledAt = c.fulfilledAt;
            cv.valuesHash = c.valuesHash;
        }
    }

    /// The EIP-712 domain separator of every consumer signature the contracts check.
    function domainSeparator() public view returns (bytes32) {
        // Recomputed after a fork that changed the chain id, so signatures stay chain-bound.
        return block.chainid == deployedChainId ? deployedDomainSeparator : buildDomainSeparator();
    }

    function buildDomainSeparator() private view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Tidepool"), keccak256("1"), block.chainid, address(this))
        );
    }
}
