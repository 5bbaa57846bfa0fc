//! WASI preview 1 conformance: each guest checks a group of functions with assertions on
//! results and errno values (see `tests/guests/src/bin/`), in the style of wasi-testsuite.

use crate::util::{Opts, dataset, guest, run};

#[test]
fn directories_and_listings() {
    let ran = run("fs_dirs", &Opts::default());
    ran.assert_success();
    // The 128-level chain the guest left was materialized and hashed through per-directory
    // handles (its path is far longer than the host's PATH_MAX would allow in one piece).
    let deepest = ran.result.outputs.entries.iter().find(|e| e.path.ends_with("bottom.txt")).expect("the deep file");
    assert_eq!(deepest.path.matches('/').count(), 128);
    // Walk down one handle at a time, as the runtime wrote it: deep (level 2), 126 `d`s.
    let mut dir =
        cap_std::fs::Dir::open_ambient_dir(ran.outputs().join("dirs/deep"), cap_std::ambient_authority()).unwrap();
    for _ in 0..126 {
        dir = dir.open_dir("d").unwrap();
    }
    assert_eq!(dir.read_to_string("bottom.txt").unwrap(), "128 levels down");
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
    let size = guest("fs_inputs").bytes().len().to_string();
    let opts = Opts::default().input("docs", docs.path()).input("more", more.path()).args(&[&size]);
    run("fs_inputs", &opts).assert_success();
}
