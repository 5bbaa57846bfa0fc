// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "./TidepoolErrors.sol";
import {AgreementStore} from "./AgreementStore.sol";

/// @title DIDs of assets: who owns each, which data it is, where its DDO is
/// @notice The first to register a DID owns it; only its owner may update it. The checksum
///         says which data the asset is: for a dataset asset, the keccak256 of the
///         concatenated EIP-712 `hashStruct(Input(name, root))` of its datasets in name order,
///         which is exactly how a receipt's `inputs` are encoded inside its hash, so the escrow
///         checks a receipt's inputs against the asset with one comparison.
///
///         The agreements' control contracts may also register a new DID on behalf of an
///         owner: the escrow registers a job's output asset for the consumer who paid for it.
contract DIDRegistry is TidepoolErrors {
    struct DIDRegister {
        address owner;
        uint64 updatedAt;
        bytes32 checksum;
        string url;
    }

    /// Whose control contracts may register DIDs for others.
    AgreementStore public immutable store;
    mapping(bytes32 did => DIDRegister) private registers;

    event DIDAttributeRegistered(
        bytes32 indexed did, address indexed owner, bytes32 checksum, string url, address registeredBy
    );

    constructor(AgreementStore store_) {
        store = store_;
    }

    /// Registers a DID for the caller, or updates it if the caller owns it.
    function registerAttribute(bytes32 did, bytes32 checksum, string calldata url) external {
        DIDRegister storage r = registers[did];
        if (r.owner == address(0)) {
            r.owner = msg.sender;
        } else if (r.owner != msg.sender) {
            revert NotOwner(did, msg.sender);
        }
        write(did, r, checksum, url);
    }

    /// Registers a new DID for `owner`. Only the agreements' control contracts may.
    function registerAttributeFor(bytes32 did, address owner, bytes32 checksum, string calldata url) external {
        if (!store.isControlContract(msg.sender)) revert Unauthorized(msg.sender);
        DIDRegister storage r = registers[did];
        if (r.owner != address(0)) revert AlreadyExists(did);
        r.owner = owner;
        write(did, r, checksum, url);
    }

    function write(bytes32 did, DIDRegister storage r, bytes32 checksum, string calldata url) private {
        r.checksum = checksum;
        r.url = url;
        r.updatedAt = uint64(block.timestamp);
        emit DIDAttributeRegistered(did, r.owner, checksum, url, msg.sender);
    }

    /// A DID's register.
    function getAttribute(bytes32 did) external view returns (DIDRegister memory) {
        DIDRegister storage r = registers[did];
        if (r.owner == address(0)) revert NotFound(did);
        return r;
    }

    /// A DID's checksum.
    function checksumOf(bytes32 did) external view returns (bytes32) {
        DIDRegister storage r = registers[did];
        if (r.owner == address(0)) revert NotFound(did);
        return r.checksum;
    }
}
