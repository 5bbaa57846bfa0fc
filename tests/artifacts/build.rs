//! Builds the test guests and the example algorithms for `wasm32-wasip1` (release), in their
//! own target directory next to the workspace's, and tells the crate where they are.
//!
//! A nested cargo needs its own target directory: the outer build holds the lock on the
//! workspace's. Variables that would make the nested build inherit the outer one's tools or
//! flags (clippy as the rustc wrapper, host RUSTFLAGS) are removed.

use std::path::PathBuf;
use std::process::Command;

const PACKAGES: &[&str] = &[
    "tidepool-test-guests",
    "tidepool-example-wordfreq",
    "tidepool-example-csv-stats",
    "tidepool-example-mandelbrot",
    "tidepool-bench-kernels",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace =
        manifest.parent().and_then(|p| p.parent()).expect("tests/artifacts is two levels down").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: share one guest build across profiles.
    let target_root = out_dir.ancestors().nth(4).map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    let guest_target = target_root.join("wasm-guests");

    for dir in ["tests/guests", "guest-sdk", "examples", "bench/kernels"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
        .env("CARGO_TARGET_DIR", &guest_target);
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    for var in
        ["RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET"]
    {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the wasm guests");
    if !status.success() {
        panic!(
            "building the wasm32-wasip1 guests failed.\n\
             If the target is missing, install it with: rustup target add wasm32-wasip1"
        );
    }
    let dir = guest_target.join("wasm32-wasip1").join("release");
    println!("cargo:rustc-env=TIDEPOOL_GUESTS_DIR={}", dir.display());
    println!("cargo:rustc-env=TIDEPOOL_TARGET_DIR={}", target_root.display());
    println!("cargo:rustc-env=TIDEPOOL_WORKSPACE_DIR={}", workspace.display());
}
