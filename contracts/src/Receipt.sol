// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// The execution receipt (format version 2), as the structs its hash is defined over, and that
// hash: the EIP-712 `hashStruct` of `Receipt`, with no domain, exactly as the Rust runtime
// computes it (`tidepool_runtime::Receipt::compute_hash`). Strings are hashed with keccak256,
// arrays by the keccak256 of their elements' encodings, nested structs by their own
// `hashStruct`; `Outcome.code` is sign-extended.

/// One input dataset: the name it is mounted under and its tree root.
struct Input {
    string name;
    bytes32 root;
}

/// What the guest saw: the module, its command line, its environment and its mounts.
struct Environment {
    string name;
    bytes32 moduleHash;
    string[] argv;
    string[] env;
    Input[] mounts;
}

/// The limits the job ran under.
struct Limits {
    uint64 fuel;
    uint64 memoryBytes;
    uint64 timeoutMs;
    uint64 outputBytes;
    uint64 outputFiles;
    uint64 stdoutBytes;
    uint64 stderrBytes;
    uint64 moduleBytes;
    uint64 maxStackHeight;
}

/// How the guest stopped.
struct Outcome {
    string kind;
    int32 code;
    string message;
}

/// What executed the job.
struct Runtime {
    string tidepoolVersion;
    string wasmtimeVersion;
    bytes32 engineConfigHash;
}

/// The hashed fields of a receipt.
struct Receipt {
    uint32 version;
    Environment environment;
    bytes32 algorithmHash;
    string algorithmName;
    string[] args;
    Input[] inputs;
    bytes32 outputsRoot;
    bytes32 stdoutHash;
    uint64 stdoutLen;
    bytes32 stderrHash;
    uint64 stderrLen;
    Outcome outcome;
    uint64 fuelConsumed;
    Limits limits;
    Runtime runtime;
    bytes32 seed;
    bool deterministic;
}

/// @title The EIP-712 hash of a receipt
library ReceiptHash {
    /// The receipt format whose hash this library computes.
    uint32 internal constant VERSION = 2;

    bytes32 internal constant INPUT_TYPEHASH = keccak256("Input(string name,bytes32 root)");
    bytes32 internal constant ENVIRONMENT_TYPEHASH = keccak256(
        "Environment(string name,bytes32 moduleHash,string[] argv,string[] env,Input[] mounts)"
        "Input(string name,bytes32 root)"
    );
    bytes32 internal constant LIMITS_TYPEHASH = keccak256(
        "Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,"
        "uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxStackHeight)"
    );
    bytes32 internal constant OUTCOME_TYPEHASH = keccak256("Outcome(string kind,int32 code,string message)");
    bytes32 internal constant RUNTIME_TYPEHASH =
        keccak256("Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)");
    /// `encodeType(Receipt)`: the primary type, then the types it references, sorted by name.
    bytes32 internal constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(uint32 version,Environment environment,bytes32 algorithmHash,string algorithmName,string[] args,"
        "Input[] inputs,bytes32 outputsRoot,bytes32 stdoutHash,uint64 stdoutLen,bytes32 stderrHash,uint64 stderrLen,"
        "Outcome outcome,uint64 fuelConsumed,Limits limits,Runtime runtime,bytes32 seed,bool deterministic)"
        "Environment(string name,bytes32 moduleHash,string[] argv,string[] env,Input[] mounts)"
        "Input(string name,bytes32 root)"
        "Limits(uint64 fuel,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,uint64 outputFiles,"
        "uint64 stdoutBytes,uint64 stderrBytes,uint64 moduleBytes,uint64 maxStackHeight)"
        "Outcome(string kind,int32 code,string message)"
        "Runtime(string tidepoolVersion,string wasmtimeVersion,bytes32 engineConfigHash)"
    );

    /// `hashStruct(Receipt)`.
    function hash(Receipt calldata r) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                RECEIPT_TYPEHASH,
                r.version,
                hashEnvironment(r.environment),
                r.algorithmHash,
                keccak256(bytes(r.algorithmName)),
                hashStrings(r.args),
                hashInputs(r.inputs),
                r.outputsRoot,
                r.stdoutHash,
                r.stdoutLen,
                r.stderrHash,
                r.stderrLen,
                hashOutcome(r.outcome),
                r.fuelConsumed,
                hashLimits(r.limits),
                hashRuntime(r.runtime),
                r.seed,
                r.deterministic
            )
        );
    }

    /// `hashStruct(Input)`.
    function hashInput(Input calldata i) internal pure returns (bytes32) {
        return keccak256(abi.encode(INPUT_TYPEHASH, keccak256(bytes(i.name)), i.root));
    }

    /// The encoding of an `Input[]` inside a struct: keccak256 of its elements' `hashStruct`s.
    /// It is also what the DID registry holds as an asset's checksum (datasets in name order).
    function hashInputs(Input[] calldata inputs) internal pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](inputs.length);
        for (uint256 i = 0; i < inputs.length; i++) {
            hashes[i] = hashInput(inputs[i]);
        }
        return keccak256(abi.encodePacked(hashes));
    }

    /// The encoding of a `string[]`: keccak256 of its elements' keccak256s.
    function hashStrings(string[] calldata strings) internal pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](strings.length);
        for (uint256 i = 0; i < strings.length; i++) {
            hashes[i] = keccak256(bytes(strings[i]));
        }
        return keccak256(abi.encodePacked(hashes));
    }

    function hashEnvironment(Environment calldata e) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ENVIRONMENT_TYPEHASH,
                keccak256(bytes(e.name)),
                e.moduleHash,
                hashStrings(e.argv),
                hashStrings(e.env),
                hashInputs(e.mounts)
            )
        );
    }

    function hashLimits(Limits calldata l) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                LIMITS_TYPEHASH,
                l.fuel,
                l.memoryBytes,
                l.timeoutMs,
                l.outputBytes,
                l.outputFiles,
                l.stdoutBytes,
                l.stderrBytes,
                l.moduleBytes,
                l.maxStackHeight
            )
        );
    }

    function hashOutcome(Outcome calldata o) internal pure returns (bytes32) {
        return keccak256(abi.encode(OUTCOME_TYPEHASH, keccak256(bytes(o.kind)), o.code, keccak256(bytes(o.message))));
    }

    function hashRuntime(Runtime calldata r) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                RUNTIME_TYPEHASH, keccak256(bytes(r.tidepoolVersion)), keccak256(bytes(r.wasmtimeVersion)), r.engineConfigHash
            )
        );
    }
}
