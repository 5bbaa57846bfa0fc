// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "./TidepoolErrors.sol";

/// @title The ERC-20 functions the escrow uses
interface IERC20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

/// @title ERC-20 transfers that tolerate tokens returning nothing and bubble a token's revert
library SafeTransfer {
    function pull(IERC20 token, address from, address to, uint256 amount) internal {
        (bool ok, bytes memory ret) = address(token).call(abi.encodeCall(IERC20.transferFrom, (from, to, amount)));
        check(ok, ret);
    }

    function push(IERC20 token, address to, uint256 amount) internal {
        (bool ok, bytes memory ret) = address(token).call(abi.encodeCall(IERC20.transfer, (to, amount)));
        check(ok, ret);
    }

    function check(bool ok, bytes memory ret) private pure {
        if (!ok) {
            // Re-raise the token's own error (e.g. InsufficientAllowance) for the client.
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        if (ret.length != 0 && !abi.decode(ret, (bool))) revert TidepoolErrors.TransferFailed();
    }
}
