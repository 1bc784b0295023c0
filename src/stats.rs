//! Counters for `INFO rlock`: plain atomics, bumped where the engine decides, never scanned.

use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted, in the order `INFO rlock` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `LOCK.ACQUIRE` answered `OK` at once (a free lock, or the owner's token again).
    AcquiredAtOnce,
    /// Waiters handed the lock (each waiter of a same-token group counts).
    AcquiredAfterWaiting,
    /// Hand-overs: a lock passed from its holder to its first waiter.
    HandOvers,
    /// Waiters answered nil when their `BLOCK` time ran out.
    BlockTimeouts,
    /// Waiters ended by `CLIENT UNBLOCK` (`LOCK.UNBLOCK`).
    WaitersUnblocked,
    /// Waiters whose connection went away.
    WaitersDisconnected,
    /// `lock:<name>` keys that expired or were evicted.
    ExpiriesObserved,
    /// `lock:<name>` keys deleted, renamed or moved by other commands (python-redis-lock's
    /// release and reset included).
    ForeignDeletesObserved,
    /// Signals pushed by python-redis-lock itself (its release and reset scripts).
    PythonSignalsObserved,
    /// Freed locks the module signalled for python-redis-lock waiters.
    PythonSignalsSent,
    /// Freed locks not signalled: no python-redis-lock client could be waiting.
    PythonSignalsSkipped,
    /// Locks kept free for a python-redis-lock waiter whose turn it was.
    PythonTurns,
    /// Timer passes that found due work while writes were paused, and left it for later.
    DeferredWhilePaused,
    /// Bound locks let go because their connection went away.
    BoundReleased,
    /// Fences issued (`FENCE`).
    FencesIssued,
    /// Waiters answered `-TRYAGAIN`: their lock left this cluster node with its slot.
    WaitersRedirected,
}

const COUNTERS: usize = 16;

const NAMES: [&str; COUNTERS] = [
    "acquired_at_once",
    "acquired_after_waiting",
    "hand_overs",
    "block_timeouts",
    "waiters_unblocked",
    "waiters_disconnected",
    "expiries_observed",
    "foreign_deletes_observed",
    "python_signals_observed",
    "python_signals_sent",
    "python_signals_skipped",
    "python_turns",
    "deferred_while_paused",
    "bound_released",
    "fences_issued",
    "waiters_redirected",
];

static COUNTS: [AtomicU64; COUNTERS] = [const { AtomicU64::new(0) }; COUNTERS];

pub fn bump(counter: Counter) {
    add(counter, 1);
}

pub fn add(counter: Counter, n: u64) {
    COUNTS[counter as usize].fetch_add(n, Ordering::Relaxed);
}

/// Every counter with its `INFO` field name.
pub fn all() -> impl Iterator<Item = (&'static str, u64)> {
    NAMES
        .iter()
        .zip(COUNTS.iter())
        .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_name() {
        assert_eq!(Counter::WaitersRedirected as usize, COUNTERS - 1);
        let before: Vec<u64> = all().map(|(_, n)| n).collect();
        bump(Counter::HandOvers);
        add(Counter::PythonTurns, 2);
        let after: Vec<(&str, u64)> = all().collect();
        assert_eq!(after[2], ("hand_overs", before[2] + 1));
        assert_eq!(after[11], ("python_turns", before[11] + 2));
    }
}
