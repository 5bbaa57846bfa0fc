//! The EIP-712 types the receipt hash is defined over (version 2; version 1 in [`v1`]).

alloy_sol_types::sol! {
    /// One input dataset (or an environment's extra mount): the name it is mounted under
    /// and its tree root.
    #[derive(Debug)]
    struct Input {
        string name;
        bytes32 root;
    }

    /// The environment the algorithm ran in: a pinned module and how it is called.
    /// `moduleHash` is zero when the algorithm is itself the module.
    #[derive(Debug)]
    struct Environment {
        string name;
        bytes32 moduleHash;
        string[] argv;
        string[] env;
        Input[] mounts;
    }

    /// How the guest stopped. `code` is the exit code for `exited`, else 0; `message` is
    /// the trap message for `trap`, else empty.
    #[derive(Debug)]
    struct Outcome {
        string kind;
        int32 code;
        string message;
    }

    #[derive(Debug)]
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

    #[derive(Debug)]
    struct Runtime {
        string tidepoolVersion;
        string wasmtimeVersion;
        bytes32 engineConfigHash;
    }

    #[derive(Debug)]
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
}

/// The version-1 types (no environment; the native stack limit in `Limits`).
pub mod v1 {
    alloy_sol_types::sol! {
        #[derive(Debug)]
        struct Input {
            string name;
            bytes32 root;
        }

        #[derive(Debug)]
        struct Outcome {
            string kind;
            int32 code;
            string message;
        }

        #[derive(Debug)]
        struct Limits {
            uint64 fuel;
            uint64 memoryBytes;
            uint64 timeoutMs;
            uint64 outputBytes;
            uint64 outputFiles;
            uint64 stdoutBytes;
            uint64 stderrBytes;
            uint64 moduleBytes;
            uint64 maxWasmStack;
        }

        #[derive(Debug)]
        struct Runtime {
            string tidepoolVersion;
            string wasmtimeVersion;
            bytes32 engineConfigHash;
        }

        #[derive(Debug)]
        struct Receipt {
            uint32 version;
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
    }
}
