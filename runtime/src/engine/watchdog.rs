//! The watchdog: the running guests of one engine that its ticker thread stops when their
//! deadline passes or they are asked to stop, by raising the floor of their interrupt memory
//! ([`crate::instrument::interrupt`]). The guest sees it at its next loop top or call and traps;
//! the job reads why when it ends its [`Watch`].

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::instrument::interrupt;

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
    /// The guest's interrupt memory.
    flag: Flag,
    deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
    /// Why its byte was raised, once it was.
    fired: Option<Interrupt>,
}

/// A pointer to a guest's interrupt memory.
#[derive(Debug)]
struct Flag(NonNull<u8>);

// SAFETY: the memory is only ever accessed atomically, and only while its entry is in the list,
// which its `Watch` leaves (under the list's lock) before the memory goes away.
unsafe impl Send for Flag {}

/// A watched guest: unwatched by [`Watch::end`] or when dropped, which must happen before its
/// store is.
#[derive(Debug)]
pub(crate) struct Watch {
    dog: Arc<Watchdog>,
    id: u64,
}

impl Watchdog {
    /// Watches the guest whose interrupt memory is at `flag` until the returned guard is
    /// dropped.
    ///
    /// # Safety
    /// `flag` must point to the first byte of the guest's interrupt memory, be
    /// [`interrupt::usable`], and stay valid (its store alive) until the returned [`Watch`] is
    /// dropped.
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

    /// Stops watching guest `id`; why its floor was raised, if it was and the guest's check
    /// saw it ([`interrupt::SEEN`]).
    fn unwatch(&self, id: u64) -> Option<Interrupt> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let at = watched.entries.iter().position(|e| e.id == id)?;
        let entry = watched.entries.swap_remove(at);
        // SAFETY: the entry was in the list until now, so its memory is alive (see `Flag`).
        let seen = unsafe { interrupt::was_seen(entry.flag.0) };
        entry.fired.filter(|_| seen)
    }

    /// Raises the floor of every guest past its deadline or asked to stop.
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
            // store, which the guest's atomic load sees at its next check.
            unsafe { interrupt::raise(entry.flag.0) };
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

    /// Interrupt memories, as aligned as wasmtime maps them.
    struct Memories(Vec<[u64; 2]>);

    impl Memories {
        fn new(n: usize) -> Self {
            Self(vec![[0; 2]; n])
        }

        fn at(&mut self, i: usize) -> NonNull<u8> {
            let p = NonNull::from(&mut self.0[i]).cast::<u8>();
            assert!(interrupt::usable(p, interrupt::SIZE as usize));
            p
        }

        fn floor(&self, i: usize) -> i64 {
            self.0[i][0] as i64
        }

        /// What the module's stop path does when its check fails.
        fn see(&mut self, i: usize) {
            assert_eq!(self.floor(i), interrupt::RAISED);
            self.0[i][1] = u64::from(interrupt::SEEN);
        }
    }

    #[test]
    fn a_guest_is_stopped_at_its_deadline_or_on_request_and_never_after_it_is_unwatched() {
        let dog = Arc::new(Watchdog::default());
        let mut m = Memories::new(3);
        let cancel = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        // SAFETY: `m` outlives every watch.
        let (late, stopped, unwatched) = unsafe {
            (
                dog.watch(m.at(0), now, None),
                dog.watch(m.at(1), now + Duration::from_secs(3600), Some(cancel.clone())),
                dog.watch(m.at(2), now, None),
            )
        };
        drop(unwatched);
        dog.tick();
        m.see(0);
        assert_eq!(late.end(), Some(Interrupt::Timeout));
        assert_eq!(m.floor(1), 0, "raised before its deadline");
        cancel.store(true, Ordering::Relaxed);
        dog.tick();
        m.see(1);
        assert_eq!(stopped.end(), Some(Interrupt::Stopped));
        assert_eq!(m.0[2], [0, 0], "the unwatched guest's memory was written");
        // SAFETY: as above.
        let early = unsafe { dog.watch(m.at(2), now + Duration::from_secs(3600), None) };
        dog.tick();
        assert_eq!(early.end(), None, "not due, not asked");
        assert_eq!(m.0[2], [0, 0]);
    }

    /// A guest that stopped by itself (its own trap) while its floor was being raised keeps its
    /// own outcome: the stop is the watchdog's only when the guest's check saw the floor.
    #[test]
    fn a_raised_floor_the_guest_never_saw_is_not_its_stop() {
        let dog = Arc::new(Watchdog::default());
        let mut m = Memories::new(1);
        // SAFETY: `m` outlives the watch.
        let watch = unsafe { dog.watch(m.at(0), Instant::now(), None) };
        dog.tick();
        assert_eq!(watch.end(), None);
        assert_eq!(m.floor(0), interrupt::RAISED);
    }
}
