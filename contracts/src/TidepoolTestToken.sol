// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TidepoolErrors} from "./TidepoolErrors.sol";

/// @title A plain ERC-20 token for development chains
/// @notice FOR TESTS AND LOCAL CHAINS ONLY: its deployer can mint any amount to anyone. The
///         agreements work with any ERC-20; this one exists so that a local chain has one.
contract TidepoolTestToken is TidepoolErrors {
    string public constant name = "Tidepool Test Token";
    string public constant symbol = "TPT";
    uint8 public constant decimals = 18;

    address public immutable minter;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor() {
        minter = msg.sender;
    }

    /// Creates `amount` tokens for `to`. Only the deployer may.
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert Unauthorized(msg.sender);
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance(msg.sender, allowed, amount);
            allowance[from][msg.sender] = allowed - amount;
        }
        move(from, to, amount);
        return true;
    }

    function move(address from, address to, uint256 amount) private {
        uint256 balance = balanceOf[from];
        if (balance < amount) revert InsufficientBalance(from, balance, amount);
        balanceOf[from] = balance - amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
