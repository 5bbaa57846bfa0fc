//! What names and paths in the protocol may be: dataset names (`/data/inputs/<name>`) and
//! the relative paths of files inside a dataset or a job's outputs. The provider checks what
//! it is sent, and the client checks what a provider sends back, with the same rules.

/// Longest dataset name. Stricter than what the runtime accepts
/// ([`tidepool_runtime::job::MAX_NAME_BYTES`]), so every published name is a valid input name.
pub const MAX_DATASET_NAME: usize = 64;
/// Longest relative path of a published file or result.
pub const MAX_PATH: usize = 1024;
/// Deepest nesting of a published file or result.
pub const MAX_DEPTH: usize = 64;

// Every dataset name is a valid input name: the runtime's rule with a shorter length.
const _: () = assert!(MAX_DATASET_NAME <= tidepool_runtime::job::MAX_NAME_BYTES);

/// A name or path that breaks the rules, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A dataset name with other characters than `A-Z a-z 0-9 . _ -`, or too long.
    #[error("invalid dataset name `{0}`: use A-Z a-z 0-9 . _ - (at most {MAX_DATASET_NAME})")]
    DatasetName(String),
    /// A file path that is not a plain relative path within the limits.
    #[error("invalid file path `{path}`: {why}")]
    Path {
        /// The path.
        path: String,
        /// Which rule it breaks.
        why: &'static str,
    },
}

/// Dataset names: what `/data/inputs/<name>` may be.
pub fn check_dataset_name(name: &str) -> Result<(), NameError> {
    if name.len() <= MAX_DATASET_NAME && tidepool_runtime::job::is_valid_name(name) {
        Ok(())
    } else {
        Err(NameError::DatasetName(name.to_string()))
    }
}

/// File paths inside a dataset: relative, `/`-separated, no `.`/`..`, sane lengths.
pub fn check_path(path: &str) -> Result<(), NameError> {
    let bad = |why: &'static str| Err(NameError::Path { path: path.to_string(), why });
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("it must be 1 to 1024 bytes");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return bad("it is nested too deeply");
    }
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.len() > 255 || p.contains('\0')) {
        return bad("every component must be a plain name (no empty, `.` or `..` components)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        for ok in ["books", "a.b-c_1"] {
            check_dataset_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "spa ce", &"x".repeat(65)] {
            assert!(check_dataset_name(bad).is_err(), "{bad}");
        }
        for ok in ["a.txt", "dir/sub/a.txt"] {
            check_path(ok).unwrap();
        }
        for bad in ["", "/abs", "a//b", "../up", "a/./b", "a/", "x\0y"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_dataset_name_is_a_valid_input_name() {
        // The runtime's rule is the character rule; the provider only adds a shorter length.
        assert!(check_dataset_name(&"x".repeat(MAX_DATASET_NAME)).is_ok());
        for name in ["ok-name", "a..b", ".hidden", "ünï"] {
            assert_eq!(check_dataset_name(name).is_ok(), tidepool_runtime::job::is_valid_name(name), "{name}");
        }
    }
}
