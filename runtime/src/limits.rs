//! Job limits: every bound a job runs under, with its documented default, and the parsers for
//! the human forms the CLI and configuration accept (`SIZE`: `4096`, `64KiB`, `512MiB`, `2GiB`;
//! `DURATION`: `500ms`, `30s`, `2m`).
//!
//! A limit hit is an outcome recorded in the receipt, never a crash of the host. The limits are
//! part of the receipt (and of its hash), so a verifier re-executes under exactly the same ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The bounds of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel: wasm instructions executed plus host-call charges (deterministic).
    pub fuel: u64,
    /// Bytes of linear memory.
    pub memory_bytes: u64,
    /// Wall-clock time the guest may run (from its instantiation), in milliseconds. The only
    /// non-deterministic limit.
    pub timeout_ms: u64,
    /// Bytes the guest may hold in `/data/outputs` at once.
    pub output_bytes: u64,
    /// Files, directories and symlinks the guest may hold in `/data/outputs` at once.
    pub output_files: u64,
    /// Bytes of stdout kept (the rest is counted and dropped).
    pub stdout_bytes: u64,
    /// Bytes of stderr kept (the rest is counted and dropped).
    pub stderr_bytes: u64,
    /// Largest module accepted, in bytes.
    pub module_bytes: u64,
    /// Native stack the guest's wasm frames may use, in bytes (wasmtime's `max_wasm_stack`).
    /// Part of the engine configuration (so of `runtime.engine_config_hash`); hashed in
    /// `limits` by version-1 receipts only.
    pub max_wasm_stack: u64,
    /// The guest's stack limit in wasm terms (receipt version 2): the most stack height the
    /// guest's active calls may use together, each function costing what its frame holds
    /// (see the engine). Absent from version-1 receipts, which do not hash it; it reads as the
    /// default where it is not given.
    #[serde(default = "default_max_stack_height")]
    pub max_stack_height: u64,
}

impl Limits {
    /// 50 billion units of fuel: tens of seconds of compute.
    pub const DEFAULT_FUEL: u64 = 50_000_000_000;
    /// 512 MiB of linear memory.
    pub const DEFAULT_MEMORY: u64 = 512 * MIB;
    /// Five minutes.
    pub const DEFAULT_TIMEOUT_MS: u64 = 5 * 60 * 1000;
    /// 1 GiB of outputs.
    pub const DEFAULT_OUTPUT_BYTES: u64 = GIB;
    /// 10 000 output entries (files, directories and symlinks).
    pub const DEFAULT_OUTPUT_FILES: u64 = 10_000;
    /// 1 MiB kept of stdout, and as much of stderr.
    pub const DEFAULT_STDIO_BYTES: u64 = MIB;
    /// 64 MiB: modules, or an environment algorithm's files.
    pub const DEFAULT_MODULE_BYTES: u64 = 64 * MIB;
    /// wasmtime's own default.
    pub const DEFAULT_MAX_WASM_STACK: u64 = 512 * KIB;
    /// Stack height units (see [`max_stack_height`](Self::max_stack_height)).
    pub const DEFAULT_MAX_STACK_HEIGHT: u64 = 256 * 1024;
    /// The most fuel a job may have: fuel is counted down in a signed 64-bit counter (the
    /// module's own, or wasmtime's), so a larger limit could not be metered exactly.
    pub const MAX_FUEL: u64 = i64::MAX as u64;
    /// The most stack units a job may ask for (a native stack of about 64 MiB).
    pub const MAX_STACK_HEIGHT: u64 = 1 << 22;

    /// Checks that the limits can be run under.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidLimits { reason: what.to_string() });
        if self.fuel == 0 {
            return bad("fuel must be at least 1");
        }
        if self.fuel > Self::MAX_FUEL {
            return bad(&format!(
                "fuel can be at most {} (2^63 - 1): the counter is a signed 64-bit integer",
                Self::MAX_FUEL
            ));
        }
        if self.memory_bytes > 4 * GIB {
            return bad("memory cannot exceed 4 GiB (wasm32)");
        }
        if self.timeout_ms == 0 {
            return bad("the timeout must be at least 1 ms");
        }
        if !(16 * KIB..=64 * MIB).contains(&self.max_wasm_stack) {
            return bad("max_wasm_stack must be between 16 KiB and 64 MiB");
        }
        if !(1024..=Self::MAX_STACK_HEIGHT).contains(&self.max_stack_height) {
            return bad("max_stack_height must be between 1024 and 4194304 stack units");
        }
        if self.module_bytes == 0 {
            return bad("the module size limit must be at least 1 byte");
        }
        Ok(())
    }

    /// [`timeout_ms`](Self::timeout_ms) as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn default_max_stack_height() -> u64 {
    Limits::DEFAULT_MAX_STACK_HEIGHT
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            output_files: Self::DEFAULT_OUTPUT_FILES,
            stdout_bytes: Self::DEFAULT_STDIO_BYTES,
            stderr_bytes: Self::DEFAULT_STDIO_BYTES,
            module_bytes: Self::DEFAULT_MODULE_BYTES,
            max_wasm_stack: Self::DEFAULT_MAX_WASM_STACK,
            max_stack_height: Self::DEFAULT_MAX_STACK_HEIGHT,
        }
    }
}

/// Bytes in a kibibyte.
pub const KIB: u64 = 1024;
/// Bytes in a mebibyte.
pub const MIB: u64 = 1024 * KIB;
/// Bytes in a gibibyte.
pub const GIB: u64 = 1024 * MIB;

/// A value that could not be parsed, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: expected {expected}")]
pub struct ParseError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

/// Parses a byte size: plain bytes, or a number with a `KiB`, `MiB` or `GiB` suffix
/// (also `K`/`M`/`G`, `KB`/`MB`/`GB` read as binary units, any case).
pub fn parse_size(input: &str) -> Result<u64, ParseError> {
    let err =
        || ParseError { what: "size", input: input.to_string(), expected: "bytes, or a number with KiB, MiB or GiB" };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Parses a duration: a number followed by `ms`, `s` or `m`.
pub fn parse_duration(input: &str) -> Result<Duration, ParseError> {
    let err = || ParseError {
        what: "duration",
        input: input.to_string(),
        expected: "a number with ms, s or m (500ms, 30s, 2m)",
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => None,
    };
    ms.map(Duration::from_millis).ok_or_else(err)
}

/// Formats a byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn format_bytes(n: u64) -> String {
    match n {
        n if n < KIB => format!("{n} B"),
        n if n < MIB => format!("{:.1} KiB", n as f64 / KIB as f64),
        n if n < GIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n => format!("{:.1} GiB", n as f64 / GIB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("2GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("3 mb"), Ok(3 * MIB));
        assert!(parse_size("").is_err());
        assert!(parse_size("12TiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999GiB").is_err(), "overflow is an error, not a wrap");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err(), "a unit is required");
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_are_valid_and_validation_catches_nonsense() {
        Limits::default().validate().unwrap();
        let zero_fuel = Limits { fuel: 0, ..Limits::default() };
        assert!(zero_fuel.validate().is_err());
        Limits { fuel: Limits::MAX_FUEL, ..Limits::default() }.validate().unwrap();
        let too_much = Limits { fuel: Limits::MAX_FUEL + 1, ..Limits::default() };
        assert!(too_much.validate().unwrap_err().to_string().contains("at most 9223372036854775807"));
        let tiny_stack = Limits { max_wasm_stack: 1, ..Limits::default() };
        assert!(tiny_stack.validate().is_err());
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 * GIB), "3.0 GiB");
    }
}
