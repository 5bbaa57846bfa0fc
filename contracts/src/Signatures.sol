// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ECDSA signature recovery for EIP-712 digests
/// @notice Recovers the signer of a 65-byte `r ‖ s ‖ v` signature. Refuses what `ecrecover`
///         alone would accept but a careful verifier must not: a wrong length, `v` other than
///         27 or 28 (0 and 1 are read as 27 and 28), a high `s` (the malleated twin of a valid
///         signature, EIP-2), and a signature that recovers to no address.
library Signatures {
    /// Half the order of secp256k1: valid signatures have `s` at most this (EIP-2).
    uint256 internal constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// The signer of `digest`, or the zero address if the signature is not acceptable.
    function recover(bytes32 digest, bytes calldata signature) internal pure returns (address) {
        if (signature.length != 65) {
            return address(0);
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) {
            v += 27;
        }
        if (v != 27 && v != 28) {
            return address(0);
        }
        if (uint256(s) > HALF_ORDER) {
            return address(0);
        }
        return ecrecover(digest, v, r, s);
    }

    /// The EIP-712 digest of a struct hash under a domain: `keccak256(0x1901 ‖ domain ‖ struct)`.
    function typedDataDigest(bytes32 domainSeparator, bytes32 structHash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", domainSeparator, structHash));
    }
}
