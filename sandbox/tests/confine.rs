//! A confined process tries what an escaped guest would: read the provider's secrets, write
//! outside its job, open sockets, start programs, signal other processes. Each attempt must
//! fail, and what the job needs must still work.
//!
//! The probe runs in a child process (this test binary again, with `TIDEPOOL_SANDBOX_PROBE`
//! set), since confinement cannot be undone.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::path::Path;
use std::process::Command;

use tidepool_sandbox::{Policy, confine};

const PROBE: &str = "TIDEPOOL_SANDBOX_PROBE";

fn attempt(name: &str, result: std::io::Result<()>) {
    match result {
        Ok(()) => println!("probe {name}: ok"),
        Err(e) => println!("probe {name}: denied ({})", e.raw_os_error().unwrap_or(-1)),
    }
}

fn errno<T>(r: libc::c_long) -> std::io::Result<T>
where
    T: Default,
{
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(T::default()) }
}

/// The child's side: confines itself, then tries everything, printing one line per attempt.
#[test]
fn probe() {
    let Some(root) = std::env::var_os(PROBE) else { return };
    let root = Path::new(&root);
    let policy = Policy {
        read_only: vec![root.join("inputs")],
        read_write: vec![root.join("job")],
        address_space_bytes: 8 << 30,
        file_size_bytes: 1 << 20,
        cpu_seconds: 60,
        open_files: 256,
    };
    let confined = confine(&policy).unwrap();
    println!("probe landlock: {}", confined.landlock);
    attempt("read_input", std::fs::read(root.join("inputs/data.txt")).map(drop));
    attempt("write_input", std::fs::write(root.join("inputs/new.txt"), b"x"));
    attempt("write_job", std::fs::write(root.join("job/out.txt"), b"x"));
    attempt("read_secret", std::fs::read(root.join("secret/provider.key")).map(drop));
    attempt("list_root", std::fs::read_dir("/").map(drop));
    attempt("read_etc", std::fs::read("/etc/hostname").map(drop));
    attempt("write_tmp", std::fs::write("/tmp/tidepool-escape", b"x"));
    attempt("big_file", std::fs::write(root.join("job/big.bin"), vec![0u8; 2 << 20]));
    // SAFETY: plain system calls with integer arguments.
    attempt("socket", errno(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) } as libc::c_long));
    attempt("unix_socket", errno(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) } as libc::c_long));
    attempt("spawn", Command::new("/bin/true").status().map(drop));
    attempt("kill_parent", errno(unsafe { libc::kill(libc::getppid(), 0) } as libc::c_long));
    attempt("ptrace", errno(unsafe { libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0) }));
    attempt("chmod_input", {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("inputs/data.txt"), std::fs::Permissions::from_mode(0o666))
    });
    attempt("thread", std::thread::spawn(|| 1 + 1).join().map(drop).map_err(|_| std::io::Error::other("panicked")));
}

#[test]
fn a_confined_worker_reaches_only_its_own_job() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["inputs", "job", "secret"] {
        std::fs::create_dir(tmp.path().join(dir)).unwrap();
    }
    std::fs::write(tmp.path().join("inputs/data.txt"), b"data").unwrap();
    std::fs::write(tmp.path().join("secret/provider.key"), b"the provider's key").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
        .env(PROBE, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(&format!("probe {name}: ")).map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result for {name}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
            .to_string()
    };
    assert_eq!(result("landlock"), "fully enforced", "this kernel should enforce Landlock");
    for allowed in ["read_input", "write_job", "thread"] {
        assert_eq!(result(allowed), "ok", "{allowed} must work in the sandbox");
    }
    for denied in [
        "write_input",
        "read_secret",
        "list_root",
        "read_etc",
        "write_tmp",
        "big_file",
        "socket",
        "unix_socket",
        "spawn",
        "kill_parent",
        "ptrace",
        "chmod_input",
    ] {
        assert!(result(denied).starts_with("denied"), "{denied} was allowed:\n{stdout}");
    }
    assert!(!Path::new("/tmp/tidepool-escape").exists());
}
