//! Who may be waiting for a lock the python-redis-lock way, so that a lock the module frees is
//! signalled (`lock-signal:<name>`) only when someone can be woken by it. Plain data: takes
//! `now` and a way to ask whether a client is still blocked; no Redis types.
//!
//! python-redis-lock acquires with `SET lock:<name> id NX [EX expire]`, and while that fails,
//! `BLPOP lock-signal:<name> timeout` (0: no limit). So a name has a possible python waiter when
//! - a `BLPOP` on its signal is seen, for as long as that client stays blocked, at most its
//!   timeout; or
//! - a `SET lock:<name>` not made by the module is seen, for `ATTEMPT_GRACE_MS` after it: the
//!   client may be on its way from a failed `SET` to its `BLPOP`, and a release in between must
//!   leave a signal for it to find (python-redis-lock's own signal lasts 1 s for the same
//!   reason); or
//! - a client was already blocked in `BLPOP`/`BRPOP` when the module was loaded (name unknown:
//!   every name), for as long as it stays blocked.
//!
//! Names are kept as 64-bit hashes: no copy of the name, and a collision only signals a lock
//! nobody waits for. Watches of clients no longer blocked are dropped when their name is asked
//! about, and all of them by a sweep whenever the table has doubled since the last one, so the
//! table stays in proportion to the python clients actually waiting. Attempts are many more
//! (one per python-redis-lock acquire, waiting or not) and kept in a table of at most
//! `MAX_ATTEMPTS`: when it is full of attempts still in their grace, every lock counts as
//! possibly awaited until the grace of the newest one ends (more signals, never a missed one).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// How long after a `SET lock:<name>` by a client (not the module) that name is treated as
/// possibly awaited by it: twice python-redis-lock's default `signal_expire` (1 s), the time it
/// gives a client to get from a failed `SET` to its `BLPOP` before its own signal is gone.
pub const ATTEMPT_GRACE_MS: i64 = 2_000;

/// The smallest table size that triggers a sweep.
const MIN_SWEEP: usize = 1024;

/// The most `BLPOP` watches kept (about 32 bytes each): past that, every lock counts as
/// awaited (see `sweep`).
pub const MAX_WATCHES: usize = 1 << 18;

/// The most attempts kept (about 24 bytes each).
pub const MAX_ATTEMPTS: usize = 1 << 16;

/// A name's hash (fixed keys: the same name always hashes alike).
fn hash(name: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name)
}

/// A client blocked in `BLPOP` on a name's signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watch {
    client: u64,
    /// The end of its timeout (ms; `i64::MAX`: none).
    until: i64,
    /// Its place in the arrival order, among module waiters too (`Core::ticket`).
    ticket: u64,
}

/// The client of a watch when the server cannot say who sent the command (Redis 7.0 has no
/// `RedisModule_CommandFilterGetClientId`): such a `BLPOP` counts until its timeout, or until
/// a signal has been left for it (one per signal: one `LPUSH` wakes one waiter).
pub const UNKNOWN_CLIENT: u64 = 0;

impl Watch {
    fn live(&self, now: i64, blocked: &mut impl FnMut(u64) -> bool) -> bool {
        now < self.until && (self.client == UNKNOWN_CLIENT || blocked(self.client))
    }
}

#[derive(Default)]
pub struct PythonWaiters {
    /// Blocked `BLPOP`s by name hash.
    by_name: HashMap<u64, Vec<Watch>>,
    /// `SET lock:<name>` attempts by name hash: the end of their grace.
    attempts: HashMap<u64, i64>,
    /// Until when every name counts as awaited (the attempts table overflowed).
    all_until: i64,
    /// The watches overflowed and were dropped: every name counts as awaited until the
    /// clients blocked in a list pop at that moment are known (`overflow_over`).
    overflow: bool,
    /// Clients blocked in a list pop at load, on names unknown.
    anywhere: Vec<u64>,
    entries: usize,
    next_sweep: usize,
}

impl PythonWaiters {
    pub fn new() -> Self {
        PythonWaiters {
            next_sweep: MIN_SWEEP,
            ..Default::default()
        }
    }

    /// `client` blocks in `BLPOP` on `name`'s signal until `until` (ms; `i64::MAX`: no limit).
    /// `ticket` is its place in the arrival order.
    pub fn blpop(&mut self, name: &[u8], client: u64, until: i64, now: i64, ticket: u64) {
        self.note(
            hash(name),
            Watch {
                client,
                until,
                ticket,
            },
            now,
        );
    }

    /// Someone sets `lock:<name>` itself (a python-redis-lock acquire, which may fail).
    pub fn set(&mut self, name: &[u8], now: i64) {
        let until = crate::core::later(now, ATTEMPT_GRACE_MS);
        if self.attempts.len() >= MAX_ATTEMPTS {
            self.attempts.retain(|_, end| now < *end);
            if self.attempts.len() >= MAX_ATTEMPTS / 2 {
                // Still mostly live: drop them all, and count every name instead, until the
                // newest of them (this one) would have ended.
                self.attempts.clear();
                self.all_until = self.all_until.max(until);
                return;
            }
        }
        self.attempts.insert(hash(name), until);
    }

    /// Clients already blocked in a list pop when the module was loaded.
    pub fn blocked_at_load(&mut self, clients: Vec<u64>) {
        self.anywhere = clients;
    }

    /// Whether a python-redis-lock client may be waiting for `name` to be signalled.
    pub fn may_wait(
        &mut self,
        name: &[u8],
        now: i64,
        mut blocked: impl FnMut(u64) -> bool,
    ) -> bool {
        if self.overflow || now < self.all_until {
            return true;
        }
        if !self.anywhere.is_empty() {
            self.anywhere
                .retain(|c| *c != UNKNOWN_CLIENT && blocked(*c));
            if !self.anywhere.is_empty() {
                return true;
            }
        }
        if self.attempts.is_empty() && self.by_name.is_empty() {
            return false;
        }
        let h = hash(name);
        match self.attempts.get(&h) {
            Some(end) if now < *end => return true,
            Some(_) => {
                self.attempts.remove(&h);
            }
            None => {}
        }
        let Some(watches) = self.by_name.get_mut(&h) else {
            return false;
        };
        let before = watches.len();
        watches.retain(|w| w.live(now, &mut blocked));
        let left = watches.len();
        self.entries = self.entries.saturating_sub(before - left);
        if left == 0 {
            self.by_name.remove(&h);
        }
        left > 0
    }

    /// The place in the arrival order of the first python-redis-lock client still blocked on
    /// `name`'s signal: the one a signal would wake (Redis serves a list's blocked clients in
    /// the order they blocked).
    pub fn first_in_line(
        &mut self,
        name: &[u8],
        now: i64,
        mut blocked: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        let h = hash(name);
        let watches = self.by_name.get_mut(&h)?;
        let before = watches.len();
        watches.retain(|w| w.live(now, &mut blocked));
        self.entries = self.entries.saturating_sub(before - watches.len());
        let first = watches.iter().map(|w| w.ticket).min();
        if watches.is_empty() {
            self.by_name.remove(&h);
        }
        first
    }

    /// The waiter with `ticket` is being woken (its turn): it no longer waits in line.
    pub fn take_turn(&mut self, name: &[u8], ticket: u64) {
        let h = hash(name);
        let Some(watches) = self.by_name.get_mut(&h) else {
            return;
        };
        let before = watches.len();
        watches.retain(|w| w.ticket != ticket);
        self.entries = self.entries.saturating_sub(before - watches.len());
        if watches.is_empty() {
            self.by_name.remove(&h);
        }
    }

    /// A signal was left for `name`'s waiters: it wakes one of them, and if that one is a
    /// waiter whose client is unknown, its watch ends (a known client's ends when it is no
    /// longer blocked).
    pub fn signalled(&mut self, name: &[u8]) {
        let h = hash(name);
        let Some(watches) = self.by_name.get_mut(&h) else {
            return;
        };
        let earliest = watches
            .iter()
            .enumerate()
            .filter(|(_, w)| w.client == UNKNOWN_CLIENT)
            .min_by_key(|(_, w)| w.ticket)
            .map(|(i, _)| i);
        if let Some(i) = earliest {
            watches.remove(i);
            self.entries = self.entries.saturating_sub(1);
            if watches.is_empty() {
                self.by_name.remove(&h);
            }
        }
    }

    /// How many `BLPOP` watches are kept (for tests and `INFO`).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Drop every watch and attempt that has ended.
    /// True if the watches still alive were too many to keep (`MAX_WATCHES`): they were
    /// dropped, and from now on every lock counts as awaited.
    pub fn sweep(&mut self, now: i64, mut blocked: impl FnMut(u64) -> bool) -> bool {
        self.by_name.retain(|_, watches| {
            watches.retain(|w| w.live(now, &mut blocked));
            !watches.is_empty()
        });
        self.attempts.retain(|_, end| now < *end);
        self.entries = self.by_name.values().map(Vec::len).sum();
        self.next_sweep = MIN_SWEEP.max(self.entries.saturating_mul(2));
        if self.entries < MAX_WATCHES / 2 {
            return false;
        }
        // Waits that never end by themselves (clients unknown, on Redis 7.0, or blocked on
        // very many names): drop them, and signal every freed lock until the clients blocked
        // in a list pop now are known (`overflow_over`); they then count as waiting on every
        // name until they are unblocked, and the table starts over.
        self.by_name = HashMap::new();
        self.entries = 0;
        self.next_sweep = MIN_SWEEP;
        self.overflow = true;
        true
    }

    /// Whether the watches overflowed and the clients blocked now are wanted.
    pub fn overflowing(&self) -> bool {
        self.overflow
    }

    /// After an overflow: `clients` are blocked in `BLPOP`/`BRPOP` now (names unknown: every
    /// name) until they are unblocked; the overflow is over.
    pub fn overflow_over(&mut self, clients: Vec<u64>) {
        for c in clients {
            if !self.anywhere.contains(&c) {
                self.anywhere.push(c);
            }
        }
        self.overflow = false;
    }

    /// How many attempts are kept.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    /// Whether the table has grown enough since the last sweep to sweep it now.
    pub fn wants_sweep(&self) -> bool {
        self.entries >= self.next_sweep.min(MAX_WATCHES)
    }

    fn note(&mut self, name: u64, watch: Watch, now: i64) {
        let watches = self.by_name.entry(name).or_default();
        // One watch per known client: a client waits for one thing at a time.
        if let Some(w) = watches
            .iter_mut()
            .find(|w| w.client == watch.client && w.client != UNKNOWN_CLIENT)
        {
            *w = watch;
            return;
        }
        // Watches that ended without the client being asked about (a timed-out BLPOP) go first.
        let before = watches.len();
        watches.retain(|w| now < w.until);
        self.entries = self.entries.saturating_sub(before - watches.len());
        watches.push(watch);
        self.entries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: i64 = i64::MAX;

    #[test]
    fn nobody_seen_nobody_waits() {
        let mut p = PythonWaiters::new();
        assert!(!p.may_wait(b"a", 0, |_| true));
    }

    #[test]
    fn a_blpop_waits_while_blocked_and_until_its_timeout() {
        let mut p = PythonWaiters::new();
        p.blpop(b"a", 7, 1_000, 0, 0);
        assert!(p.may_wait(b"a", 999, |_| true));
        assert!(!p.may_wait(b"b", 999, |_| true), "only its own name");
        assert!(!p.may_wait(b"a", 1_000, |_| true), "timed out");
        assert!(p.is_empty());
        p.blpop(b"a", 7, NEVER, 0, 0);
        assert!(
            p.may_wait(b"a", i64::MAX - 1, |_| true),
            "BLPOP 0 waits forever"
        );
        assert!(!p.may_wait(b"a", 5, |_| false), "woken, gave up or gone");
        assert!(p.is_empty());
    }

    #[test]
    fn a_set_counts_for_the_grace_even_unblocked() {
        let mut p = PythonWaiters::new();
        p.set(b"a", 100);
        assert!(p.may_wait(b"a", 100 + ATTEMPT_GRACE_MS - 1, |_| false));
        assert!(!p.may_wait(b"a", 100 + ATTEMPT_GRACE_MS, |_| false));
        p.set(b"a", i64::MAX - 5);
        assert!(p.may_wait(b"a", i64::MAX - 1, |_| false), "saturates");
    }

    #[test]
    fn several_waiters_on_one_name_each_count() {
        let mut p = PythonWaiters::new();
        p.blpop(b"a", 1, NEVER, 0, 0);
        p.blpop(b"a", 2, NEVER, 0, 0);
        p.blpop(b"a", 2, NEVER, 0, 0);
        assert_eq!(p.len(), 2, "one watch per client");
        assert!(p.may_wait(b"a", 1, |c| c == 2));
        assert_eq!(p.len(), 1);
        assert!(!p.may_wait(b"a", 1, |_| false));
        assert!(p.is_empty());
    }

    #[test]
    fn unknown_clients_count_until_their_timeout_or_one_signal_each() {
        let mut p = PythonWaiters::new();
        p.blpop(b"a", UNKNOWN_CLIENT, NEVER, 0, 0);
        p.blpop(b"a", UNKNOWN_CLIENT, 50, 0, 0);
        assert_eq!(p.len(), 2, "two waiters, not one");
        assert!(
            p.may_wait(b"a", 10, |_| false),
            "cannot ask whether it is blocked"
        );
        p.signalled(b"a");
        assert!(p.may_wait(b"a", 10, |_| false));
        p.signalled(b"a");
        assert!(!p.may_wait(b"a", 10, |_| false));
        p.blpop(b"b", UNKNOWN_CLIENT, 50, 0, 0);
        assert!(!p.may_wait(b"b", 50, |_| false), "timed out");
        p.set(b"c", 0);
        p.signalled(b"c");
        assert!(
            p.may_wait(b"c", 1, |_| false),
            "an attempt is not a waiter to wake"
        );
    }

    #[test]
    fn the_first_in_line_is_the_earliest_live_ticket() {
        let mut p = PythonWaiters::new();
        assert_eq!(p.first_in_line(b"a", 0, |_| true), None);
        p.blpop(b"a", 1, NEVER, 0, 7);
        p.blpop(b"a", 2, NEVER, 0, 3);
        p.blpop(b"a", 3, 10, 0, 1);
        assert_eq!(p.first_in_line(b"a", 5, |_| true), Some(1));
        assert_eq!(p.first_in_line(b"a", 10, |_| true), Some(3), "timed out");
        assert_eq!(p.first_in_line(b"a", 10, |c| c != 2), Some(7), "gave up");
        p.take_turn(b"a", 7);
        assert_eq!(p.first_in_line(b"a", 10, |_| true), None);
        assert!(p.is_empty());
    }

    #[test]
    fn clients_blocked_at_load_wait_on_every_name_until_unblocked() {
        let mut p = PythonWaiters::new();
        p.blocked_at_load(vec![3, 4]);
        assert!(p.may_wait(b"x", 0, |c| c == 4));
        assert!(p.may_wait(b"y", 0, |c| c == 4));
        assert!(!p.may_wait(b"x", 0, |_| false));
    }

    #[test]
    fn sweeps_keep_the_table_in_proportion() {
        let mut p = PythonWaiters::new();
        for i in 0..10_000u64 {
            p.blpop(i.to_string().as_bytes(), i, NEVER, 0, 0);
            if p.wants_sweep() {
                p.sweep(0, |c| c % 100 == 0);
            }
        }
        assert!(p.len() < 2 * MIN_SWEEP, "{}", p.len());
        assert!(!p.sweep(0, |c| c % 100 == 0));
        assert_eq!(p.len(), 100);
        assert!(p.may_wait(b"200", 0, |c| c % 100 == 0));
        assert!(!p.may_wait(b"201", 0, |c| c % 100 == 0));
    }

    #[test]
    fn attempts_are_bounded_and_overflow_to_every_name() {
        let mut p = PythonWaiters::new();
        for i in 0..MAX_ATTEMPTS {
            p.set(i.to_string().as_bytes(), 0);
        }
        assert_eq!(p.attempts(), MAX_ATTEMPTS);
        assert!(!p.may_wait(b"never-tried", 1, |_| false));
        p.set(b"one-more", 1);
        assert!(p.attempts() <= MAX_ATTEMPTS, "{}", p.attempts());
        assert!(
            p.may_wait(b"never-tried", 2, |_| false),
            "overflow: every name"
        );
        assert!(p.may_wait(b"one-more", 1 + ATTEMPT_GRACE_MS - 1, |_| false));
        assert!(!p.may_wait(b"never-tried", 1 + ATTEMPT_GRACE_MS, |_| false));
        // Attempts that ended make room instead.
        let mut p = PythonWaiters::new();
        for i in 0..MAX_ATTEMPTS {
            p.set(i.to_string().as_bytes(), 0);
        }
        p.set(b"later", ATTEMPT_GRACE_MS);
        assert_eq!(p.attempts(), 1);
        assert!(!p.may_wait(b"never-tried", ATTEMPT_GRACE_MS, |_| false));
    }

    #[test]
    fn waits_that_never_end_are_bounded() {
        // A client that blocks without limit on name after name and hangs up, on a server that
        // cannot say who it was: the watches stay bounded, and then every lock is signalled.
        let mut p = PythonWaiters::new();
        let mut overflowed = false;
        for i in 0..(MAX_WATCHES as u64 + 10) {
            p.blpop(i.to_string().as_bytes(), UNKNOWN_CLIENT, NEVER, 0, i);
            if p.wants_sweep() {
                overflowed |= p.sweep(0, |_| false);
            }
            assert!(p.len() <= MAX_WATCHES);
        }
        assert!(overflowed);
        assert!(p.may_wait(b"never-seen", 1, |_| false));
        assert!(p.overflowing());
        // Transient: over once the clients blocked at that moment are known, and they count
        // only while they stay blocked.
        p.overflow_over(vec![5]);
        assert!(!p.overflowing());
        assert!(p.may_wait(b"never-seen", 1, |c| c == 5));
        assert!(!p.may_wait(b"never-seen", 1, |_| false));
        assert!(p.len() < MIN_SWEEP, "{}", p.len());
    }

    #[test]
    fn the_watch_noted_after_a_sweep_is_kept() {
        // The engine sweeps before it notes a new watch, whose client is not blocked yet.
        let mut p = PythonWaiters::new();
        for i in 0..MIN_SWEEP as u64 {
            p.blpop(i.to_string().as_bytes(), i + 1, NEVER, 0, i);
        }
        assert!(p.wants_sweep());
        assert!(!p.sweep(0, |_| false));
        p.blpop(b"new", 99_999, NEVER, 0, 1 << 20);
        assert!(p.may_wait(b"new", 0, |c| c == 99_999));
    }

    #[test]
    fn extreme_times_never_wrap() {
        let mut p = PythonWaiters::new();
        for now in [0, 1, i64::MAX / 1000, i64::MAX - 1, i64::MAX] {
            p.set(b"a", now);
            p.blpop(b"a", 2, now.saturating_add(5), now, 0);
            let _ = p.may_wait(b"a", now, |_| true);
            let _ = p.sweep(now, |_| true);
        }
    }
}
