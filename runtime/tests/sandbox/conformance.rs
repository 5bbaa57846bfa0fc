//! WASI preview 1 conformance: each guest checks a group of functions with assertions on
//! results and errno values (see `tests/guests/src/bin/`), in the style of wasi-testsuite.

use crate::util::{Opts, dataset, guest, run};

#[test]
fn directories_and_listings() {
    run("fs_dirs", &Opts::default()).assert_success();
}

#[test]
fn path_open() {
    run("fs_open", &Opts::default()).assert_success();
}

#[test]
fn reads_writes_and_seeks() {
    let ran = run("fs_rw", &Opts::default());
    ran.assert_success();
    assert_eq!(ran.stdout(), "stdout works\n");
}

#[test]
fn symlinks_links_renames_and_unlinks() {
    run("fs_links", &Opts::default()).assert_success();
}

#[test]
fn descriptor_metadata_and_table() {
    run("fs_meta", &Opts::default()).assert_success();
}

#[test]
fn args_env_clocks_random_poll_and_sockets() {
    let ran = run("misc", &Opts::default().args(&["one", "two words", "ünïcode"]));
    ran.assert_success();
    assert_eq!(ran.stdout(), "misc: ok\n");
}

#[test]
fn read_only_mounts_and_input_symlinks() {
    let docs = dataset(&[("a.txt", b"alpha"), ("sub/b.txt", b"beta")]);
    std::os::unix::fs::symlink("sub/b.txt", docs.path().join("inside")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", docs.path().join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", docs.path().join("absolute")).unwrap();
    std::os::unix::fs::symlink("../more/c.txt", docs.path().join("other")).unwrap();
    let more = dataset(&[("c.txt", b"gamma")]);
    let size = guest("fs_inputs").bytes.len().to_string();
    let opts = Opts::default().input("docs", docs.path()).input("more", more.path()).args(&[&size]);
    run("fs_inputs", &opts).assert_success();
}
