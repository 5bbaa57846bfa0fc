//! The watchdog: the running guests of one engine that its ticker thread stops when their
//! deadline passes or they are asked to stop, by raising their interrupt byte
//! ([`crate::instrument::interrupt`]). The guest sees it at its next loop top or call and traps;
//! the job reads why when it ends its [`Watch`].

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::instrument::interrupt::{RAISED, SEEN};

/// Why a guest was stopped from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// Its wall-clock limit passed.
    Timeout,
    /// It was asked to stop.
    Stopped,
}

/// The guests being watched.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    watched: Mutex<Watched>,
}

#[derive(Debug, Default)]
struct Watched {
    next_id: u64,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    /// The guest's interrupt byte.
    flag: Flag,
    deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
    /// Why its byte was raised, once it was.
    fired: Option<Interrupt>,
}

/// A pointer to a guest's interrupt byte.
#[derive(Debug)]
struct Flag(NonNull<u8>);

// SAFETY: the byte is only ever written through an atomic store, and only while its entry is
// in the list, which its `Watch` leaves (under the list's lock) before the memory goes away.
unsafe impl Send for Flag {}

/// A watched guest: unwatched by [`Watch::end`] or when dropped, which must happen before its
/// store is.
#[derive(Debug)]
pub(crate) struct Watch {
    dog: Arc<Watchdog>,
    id: u64,
}

impl Watchdog {
    /// Watches the guest whose interrupt byte is at `flag` until the returned guard is dropped.
    ///
    /// # Safety
    /// `flag` must point to the first byte of the guest's interrupt memory and stay valid
    /// (its store alive) until the returned [`Watch`] is dropped.
    pub(crate) unsafe fn watch(
        self: &Arc<Self>,
        flag: NonNull<u8>,
        deadline: Instant,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Watch {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let id = watched.next_id;
        watched.next_id += 1;
        watched.entries.push(Entry { id, flag: Flag(flag), deadline, cancel, fired: None });
        Watch { dog: self.clone(), id }
    }

    /// Stops watching guest `id`; why its byte was raised, if it was and the guest's check
    /// saw it (the byte [`SEEN`]).
    fn unwatch(&self, id: u64) -> Option<Interrupt> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let at = watched.entries.iter().position(|e| e.id == id)?;
        let entry = watched.entries.swap_remove(at);
        // SAFETY: the entry was in the list until now, so its memory is alive (see `Flag`).
        let seen = unsafe { AtomicU8::from_ptr(entry.flag.0.as_ptr()) }.load(Ordering::Acquire) == SEEN;
        entry.fired.filter(|_| seen)
    }

    /// Raises the interrupt byte of every guest past its deadline or asked to stop.
    pub(crate) fn tick(&self) {
        let now = Instant::now();
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for entry in watched.entries.iter_mut().filter(|e| e.fired.is_none()) {
            entry.fired = if entry.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                Some(Interrupt::Stopped)
            } else if now >= entry.deadline {
                Some(Interrupt::Timeout)
            } else {
                continue;
            };
            // SAFETY: the entry is in the list, so its memory is alive (see `Flag`); an atomic
            // byte store, which the guest's plain byte load sees at its next check.
            unsafe { AtomicU8::from_ptr(entry.flag.0.as_ptr()) }.store(RAISED, Ordering::Release);
        }
    }
}

impl Watch {
    /// Stops watching the guest; why it was stopped from outside, if it was.
    pub(crate) fn end(self) -> Option<Interrupt> {
        self.dog.unwatch(self.id)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.dog.unwatch(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_guest_is_stopped_at_its_deadline_or_on_request_and_never_after_it_is_unwatched() {
        let dog = Arc::new(Watchdog::default());
        let mut bytes = [0u8; 3];
        let base = bytes.as_mut_ptr();
        // SAFETY: within `bytes`.
        let ptr = |i: usize| NonNull::new(unsafe { base.add(i) }).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        // SAFETY: `bytes` outlives every watch.
        let (late, stopped, unwatched) = unsafe {
            (
                dog.watch(ptr(0), now, None),
                dog.watch(ptr(1), now + Duration::from_secs(3600), Some(cancel.clone())),
                dog.watch(ptr(2), now, None),
            )
        };
        drop(unwatched);
        dog.tick();
        // The guests' checks see their raised bytes (as the module's stop path marks them).
        let see = |i: usize| {
            assert_eq!(bytes[i], RAISED);
            // SAFETY: within `bytes`.
            unsafe { AtomicU8::from_ptr(ptr(i).as_ptr()) }.store(SEEN, Ordering::Release);
        };
        see(0);
        assert_eq!(late.end(), Some(Interrupt::Timeout));
        cancel.store(true, Ordering::Relaxed);
        dog.tick();
        see(1);
        assert_eq!(stopped.end(), Some(Interrupt::Stopped));
        assert_eq!(bytes, [SEEN, SEEN, 0], "the unwatched guest's byte was written");
        // SAFETY: as above.
        let early = unsafe { dog.watch(ptr(2), now + Duration::from_secs(3600), None) };
        dog.tick();
        assert_eq!(early.end(), None, "not due, not asked");
        assert_eq!(bytes[2], 0);
    }

    /// A guest that stopped by itself (its own trap) while its byte was being raised keeps its
    /// own outcome: the stop is the watchdog's only when the guest's check saw the byte.
    #[test]
    fn a_raised_byte_the_guest_never_saw_is_not_its_stop() {
        let dog = Arc::new(Watchdog::default());
        let mut byte = 0u8;
        // SAFETY: `byte` outlives the watch.
        let watch = unsafe { dog.watch(NonNull::from(&mut byte), Instant::now(), None) };
        dog.tick();
        assert_eq!(watch.end(), None);
        assert_eq!(byte, RAISED);
    }
}
