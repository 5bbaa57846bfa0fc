//! The systemd unit (`packaging/tidepool.service`): `systemd-analyze security`, offline (nothing
//! is installed or started), rates its exposure; the test fails above 2.0 (systemd's "OK"
//! band) or if a directive the issue asks for is missing, and is skipped with a printed reason
//! where `systemd-analyze` (Debian package `systemd`) cannot run.

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/tidepool.service");
    let run =
        Command::new("systemd-analyze").args(["security", "--offline=true", "--threshold=20"]).arg(&unit).output();
    let out = match run {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: systemd-analyze cannot run here ({e}); it is in the Debian package `systemd`");
            return;
        }
    };
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0, or the unit is invalid:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for directive in [
        "User=/DynamicUser=",
        "NoNewPrivileges=",
        "ProtectSystem=",
        "PrivateTmp=",
        "RestrictAddressFamilies=~AF_PACKET",
        "SystemCallFilter=~@privileged",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
    ] {
        assert!(report.lines().any(|l| l.starts_with(&format!("✓ {directive}"))), "{directive} is not set:\n{report}");
    }
}
