//! Running a job on a thread with enough native stack.
//!
//! Callers run [`Runtime::run`](crate::Runtime::run) on whatever thread they have (tokio's
//! blocking threads have 2 MiB of stack, a program's main thread usually 8 MiB). A job needs
//! its engine's native stack limit plus room for the host above and below it; when the
//! current thread has less left, the job runs on a scoped thread with a stack of that size.

/// Runs `f` where at least `need` bytes of stack are left: here, or on a new thread.
pub(crate) fn with_stack<R: Send>(need: usize, f: impl FnOnce() -> R + Send) -> R {
    if remaining().is_some_and(|left| left >= need) {
        return f();
    }
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new().name("tidepool-job".into()).stack_size(need).spawn_scoped(scope, f);
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(e) => panic!("cannot start a thread with a {need}-byte stack for a job: {e}"),
        }
    })
}

/// Bytes of stack left below the caller's frame on this thread, if the platform tells.
#[cfg(target_os = "linux")]
fn remaining() -> Option<usize> {
    thread_local! {
        // The lowest address of this thread's stack, found once: for the main thread glibc
        // reads /proc/self/maps to tell.
        static BASE: Option<usize> = stack_base();
    }
    let marker = std::hint::black_box(0u8);
    let here = std::ptr::addr_of!(marker) as usize;
    BASE.with(|base| base.map(|b| here.saturating_sub(b)))
}

#[cfg(target_os = "linux")]
fn stack_base() -> Option<usize> {
    // SAFETY: `attr` is initialized by `pthread_getattr_np` before it is read and destroyed
    // once; the pointers passed are valid for writes of their types.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        // The stack grows down from `base + size` to `base`.
        ok.then_some(base as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn remaining() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_get_the_stack_they_need() {
        let here = super::remaining().expect("Linux tells");
        assert!(here > 16 * 1024, "{here}");
        // More than any thread has here: runs on a new one, which has it.
        let need = here + (64 << 20);
        let there = super::with_stack(need, || super::remaining().expect("Linux tells"));
        assert!(there + 64 * 1024 >= need, "{there} left of {need}");
        assert_eq!(super::with_stack(1024, || 7), 7, "runs here when there is room");
    }
}
