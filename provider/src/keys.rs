//! Private key files: one line of 64 hex digits, created with mode 0600. The provider refuses
//! to start with a key file that others may read or write (see [`check_private`]); keys are
//! never printed (`PrivateKeySigner`'s `Debug` shows only the address).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use alloy_primitives::B256;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, Result, bail};

/// Reads a key file.
pub fn load(path: &Path) -> Result<PrivateKeySigner> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
    let hex = text.trim().trim_start_matches("0x");
    if hex.len() != 64 {
        bail!("{} is not a key file (expected 64 hex digits)", path.display());
    }
    let bytes: B256 = hex.parse().with_context(|| format!("{} is not a key file", path.display()))?;
    PrivateKeySigner::from_bytes(&bytes).with_context(|| format!("{} holds an invalid secp256k1 key", path.display()))
}

/// Writes `key` to a new file readable only by its owner; refuses to overwrite.
pub fn save(path: &Path, key: &PrivateKeySigner) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the key file {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))?;
    Ok(())
}

/// Refuses a key file that anyone but its owner may read or write (mode bits `0o077`).
pub fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "the key file {} has mode {:o}: others may read or change it; make it private with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Loads the key at `path` (which must be private: [`check_private`]), creating a new one
/// there first if `create` and it is missing.
pub fn load_or_create(path: &Path, create: bool) -> Result<(PrivateKeySigner, bool)> {
    if path.exists() || !create {
        check_private(path)?;
        return Ok((load(path)?, false));
    }
    let key = PrivateKeySigner::random();
    save(path, &key)?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_privately_and_are_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k/key");
        let (key, created) = load_or_create(&path, true).unwrap();
        assert!(created);
        assert_eq!(load(&path).unwrap().address(), key.address());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(save(&path, &PrivateKeySigner::random()).is_err());
        std::fs::write(tmp.path().join("bad"), "xyz").unwrap();
        assert!(load(&tmp.path().join("bad")).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(key.to_bytes())), "Debug shows the secret");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("provider.key");
        load_or_create(&path, true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path, true).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_or_create(&path, true).unwrap();
    }
}
