//! Argument parsers shared by the subcommands.

use std::path::PathBuf;

use alloy_primitives::B256;

/// `--input NAME=DIR`.
#[derive(Debug, Clone)]
pub struct InputArg {
    pub name: String,
    pub dir: PathBuf,
}

impl std::str::FromStr for InputArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, dir) = s.split_once('=').ok_or_else(|| format!("expected NAME=DIR, got `{s}`"))?;
        if name.is_empty() || dir.is_empty() {
            return Err(format!("expected NAME=DIR, got `{s}`"));
        }
        Ok(Self { name: name.to_string(), dir: PathBuf::from(dir) })
    }
}

impl From<InputArg> for tidepool_runtime::InputSpec {
    fn from(a: InputArg) -> Self {
        Self::new(a.name, a.dir)
    }
}

/// `SIZE`: bytes, or with a KiB/MiB/GiB suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    tidepool_runtime::limits::parse_size(s).map_err(|e| e.to_string())
}

/// `DURATION`: `500ms`, `30s`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    tidepool_runtime::limits::parse_duration(s).map_err(|e| e.to_string())
}

/// A count that may be written with `_` separators (`50_000_000`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.replace('_', "").parse().map_err(|_| format!("expected a whole number, got `{s}`"))
}

/// `--seed HEX`: 32 bytes as 64 hex digits, with or without `0x`.
pub fn parse_seed(s: &str) -> Result<B256, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() != 64 {
        return Err(format!("a seed is 32 bytes: 64 hex digits, got {}", hex.len()));
    }
    hex.parse::<B256>().map_err(|_| format!("`{s}` is not hexadecimal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        let a: InputArg = "books=/data/books".parse().unwrap();
        assert_eq!((a.name.as_str(), a.dir.to_str().unwrap()), ("books", "/data/books"));
        let b: InputArg = "x=a=b".parse().unwrap();
        assert_eq!(b.dir.to_str().unwrap(), "a=b", "only the first = splits");
        assert!("books".parse::<InputArg>().is_err());
        assert!("=dir".parse::<InputArg>().is_err());
    }

    #[test]
    fn seeds_and_counts() {
        assert_eq!(parse_seed(&"ab".repeat(32)).unwrap(), B256::repeat_byte(0xab));
        assert_eq!(parse_seed(&format!("0x{}", "01".repeat(32))).unwrap(), B256::repeat_byte(1));
        assert!(parse_seed("abcd").is_err());
        assert!(parse_seed(&"zz".repeat(32)).is_err());
        assert_eq!(parse_count("50_000"), Ok(50_000));
        assert!(parse_count("lots").is_err());
    }
}
