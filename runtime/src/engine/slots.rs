//! Instance slots: how many guests a [`Runtime`](crate::Runtime) runs at once, given out in
//! order of arrival.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::TICK;

/// The instance slots of a [`Runtime`](crate::Runtime): a counting semaphore over
/// [`RuntimeConfig::max_instances`](super::RuntimeConfig::max_instances), shared by all its engines.
#[derive(Debug)]
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
    bounded: bool,
}

#[derive(Debug)]
struct SlotState {
    free: usize,
    /// Jobs waiting for a slot, by ticket, first come first served.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// A taken slot, given back when dropped.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(crate) fn new(max_instances: usize) -> Self {
        Self {
            state: Mutex::new(SlotState { free: max_instances, queue: VecDeque::new(), next_ticket: 0 }),
            freed: Condvar::new(),
            bounded: max_instances > 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot, in order of arrival; `None` if `cancel` is set while waiting.
    pub(crate) fn take(&self, cancel: Option<&AtomicBool>) -> Option<Slot<'_>> {
        if !self.bounded {
            return Some(Slot(self));
        }
        let mut state = self.lock();
        if state.free > 0 && state.queue.is_empty() {
            state.free -= 1;
            return Some(Slot(self));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        loop {
            if state.free > 0 && state.queue.front() == Some(&ticket) {
                state.queue.pop_front();
                state.free -= 1;
                self.wake_next(&state);
                return Some(Slot(self));
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                state.queue.retain(|t| *t != ticket);
                self.wake_next(&state);
                return None;
            }
            state = self.freed.wait_timeout(state, TICK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Wakes the waiters when the first of them can go. (All wake, one goes, the others wait
    /// again; waiting happens only when every slot is busy.)
    fn wake_next(&self, state: &SlotState) {
        if state.free > 0 && !state.queue.is_empty() {
            self.freed.notify_all();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.0.bounded {
            let mut state = self.0.lock();
            state.free += 1;
            // Waking costs a system call: only when someone waits.
            self.0.wake_next(&state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn instance_slots_go_to_waiters_in_order_of_arrival() {
        use std::sync::mpsc;
        let slots = Arc::new(Slots::new(1));
        let held = slots.take(None).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let (mine, tx) = (slots.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let slot = mine.take(None).unwrap();
                tx.send(n).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                drop(slot);
            }));
            // Each waiter queues before the next one starts.
            while slots.lock().queue.len() < n + 1 {
                std::thread::yield_now();
            }
        }
        // A newcomer while others wait does not jump the queue, even with a slot free.
        drop(held);
        let newcomer = slots.take(None).unwrap();
        tx.send(3).unwrap();
        drop(newcomer);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }
}
