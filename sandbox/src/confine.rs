//! Confining the calling process: what a worker does to itself before it touches a job.
//!
//! In order, each a layer of its own (a wasmtime escape must get past all of them):
//!
//! 1. **descriptors**: every descriptor above stdio is closed, so nothing the parent had open
//!    (the database, the key file, the listening socket) is reachable by number;
//! 2. **rlimits**: address space, open files, file size, CPU seconds, no core dumps;
//! 3. **no new privileges** (`PR_SET_NO_NEW_PRIVS`): no set-uid binary gains anything;
//! 4. **Landlock**: the filesystem is reduced to the paths of the [`Policy`], read-only or
//!    read-write; everything else, the provider's key and database among them, cannot be
//!    opened, listed, executed or created; TCP bind and connect are denied (ABI 4+), and so are
//!    signals and abstract sockets outside the sandbox (ABI 6+);
//! 5. **seccomp**: a filter, on every thread, that fails what a job never needs with `EPERM`:
//!    sockets, `execve`, new processes (`clone` without `CLONE_THREAD`, `fork`), `ptrace` and
//!    the other ways into another process, mounts and namespaces, kernel modules, BPF, perf,
//!    io_uring, keyrings, `userfaultfd`, clock and system changes, and the metadata changes
//!    Landlock does not cover (mode, owner, extended attributes). (A deny list: wasmtime's own
//!    needs, memory mapping, signals for traps, threads, stay allowed.)
//!
//! Landlock applies to the calling thread and the threads it starts afterwards, so a worker
//! confines itself before it starts any thread.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// What a confined process may still reach, and its resource limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Directories (or files) readable below, never writable.
    pub read_only: Vec<PathBuf>,
    /// Directories writable below (files created, written, removed, linked).
    pub read_write: Vec<PathBuf>,
    /// `RLIMIT_AS`: bytes of address space (wasmtime reserves its guest memory here).
    pub address_space_bytes: u64,
    /// `RLIMIT_FSIZE`: the largest file the process may write.
    pub file_size_bytes: u64,
    /// `RLIMIT_CPU`: CPU seconds, all threads together (`SIGKILL` past the hard limit).
    pub cpu_seconds: u64,
    /// `RLIMIT_NOFILE`: open descriptors.
    pub open_files: u64,
}

/// How the confinement went: what the kernel enforced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confined {
    /// `fully enforced`, `partially enforced` (an older kernel: some access rights are not
    /// known to it), or `not enforced` (no Landlock).
    pub landlock: String,
    /// True when the seccomp filter is installed (always, once confining succeeded).
    pub seccomp: bool,
    /// True when no-new-privileges is set (always, once confining succeeded).
    pub no_new_privs: bool,
}

/// Why confining failed. A worker that cannot confine itself does not run the job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// A system call failed.
    #[error("setting {what} failed: {source}")]
    Os {
        /// What was being set (`rlimits`, `no_new_privs`...).
        what: &'static str,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
    /// The Landlock ruleset could not be built or applied.
    #[error("the Landlock ruleset could not be applied: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The seccomp filter could not be built or installed.
    #[error("the seccomp filter could not be built or applied: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// The seccomp filter could not be compiled to BPF.
    #[error("the seccomp filter could not be built: {0}")]
    SeccompBackend(#[from] seccompiler::BackendError),
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> ConfineError {
    move |source| ConfineError::Os { what, source }
}

/// Confines the calling process to `policy` (see the module). Irreversible.
pub fn confine(policy: &Policy) -> Result<Confined, ConfineError> {
    close_inherited_descriptors()?;
    set_rlimits(policy)?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os("no_new_privs")(std::io::Error::last_os_error()));
    }
    let landlock = restrict_filesystem(policy)?;
    install_seccomp()?;
    Ok(Confined { landlock, seccomp: true, no_new_privs: true })
}

/// Closes every descriptor above 2.
fn close_inherited_descriptors() -> Result<(), ConfineError> {
    // SAFETY: close_range takes integer arguments; closing descriptors this process does not
    // use (everything above stdio, before any other is opened) cannot invalidate a Rust handle.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        return Err(os("close_range")(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_rlimits(policy: &Policy) -> Result<(), ConfineError> {
    let set = |resource, value: u64, what| {
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit reads one rlimit struct that lives for the call.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(os(what)(std::io::Error::last_os_error()));
        }
        Ok(())
    };
    set(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    // A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the worker.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if policy.address_space_bytes > 0 {
        set(libc::RLIMIT_AS, policy.address_space_bytes, "RLIMIT_AS")?;
    }
    if policy.file_size_bytes > 0 {
        set(libc::RLIMIT_FSIZE, policy.file_size_bytes, "RLIMIT_FSIZE")?;
    }
    if policy.cpu_seconds > 0 {
        set(libc::RLIMIT_CPU, policy.cpu_seconds, "RLIMIT_CPU")?;
    }
    if policy.open_files > 0 {
        set(libc::RLIMIT_NOFILE, policy.open_files, "RLIMIT_NOFILE")?;
    }
    Ok(())
}

/// Landlock: only the policy's paths, and no TCP, signals or abstract sockets beyond the
/// sandbox. Best effort on older kernels (what they know is enforced, and the status says so).
fn restrict_filesystem(policy: &Policy) -> Result<String, ConfineError> {
    let abi = ABI::V6;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(&policy.read_only, read))?
        .add_rules(path_beneath_rules(&policy.read_write, all))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        _ => "not enforced",
    }
    .to_string())
}

/// The system calls a job never needs (see the module).
fn denied_syscalls() -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    let legacy = [libc::SYS_fork, libc::SYS_vfork, libc::SYS_mknod, libc::SYS_chmod, libc::SYS_chown, libc::SYS_lchown];
    #[cfg(not(target_arch = "x86_64"))]
    let legacy: [i64; 0] = [];
    let mut calls = vec![
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_kill,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_personality,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_syslog,
        libc::SYS_quotactl,
        libc::SYS_name_to_handle_at,
        libc::SYS_open_by_handle_at,
        libc::SYS_mknodat,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_fanotify_init,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        // Metadata Landlock does not cover: a worker changes no file's mode, owner or
        // extended attributes (hard links to read-only blobs stay read-only).
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_fsetxattr,
        libc::SYS_removexattr,
        libc::SYS_lremovexattr,
        libc::SYS_fremovexattr,
    ];
    calls.extend(legacy);
    calls
}

fn arch() -> Result<seccompiler::TargetArch, ConfineError> {
    Ok(std::env::consts::ARCH.try_into()?)
}

/// Installs the filters on every thread of the process.
fn install_seccomp() -> Result<(), ConfineError> {
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        denied_syscalls().into_iter().map(|n| (n, Vec::new())).collect();
    // A new process (clone without CLONE_THREAD) is refused; threads are fine.
    let thread = libc::CLONE_THREAD as u64;
    let no_thread = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(thread), 0)?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![no_thread])?]);
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch()?)?;
    // clone3 passes its flags in memory, where a filter cannot look: it is answered ENOSYS,
    // and the C library falls back to clone, whose flags the filter above checks.
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )?;
    for filter in [deny, clone3] {
        let program: BpfProgram = filter.try_into()?;
        seccompiler::apply_filter_all_threads(&program)?;
    }
    Ok(())
}
