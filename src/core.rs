//! The lock and waiter core: plain data, no Redis types, no clock.
//!
//! The keys in Redis (`lock:<name>`) are the truth about who holds a lock: python-redis-lock
//! clients write them too. The core keeps what Redis does not: for every lock, the module
//! clients blocked on it in arrival order and when each one's BLOCK time runs out, the grants
//! whose reply is still on its way, and the moments at which a lock must be looked at again (a
//! holder's lease ending, a foreign release to follow up). Every time-dependent call takes `now` in milliseconds; the shell
//! (`wake.rs`) reads the keys, calls in here, and performs what comes back.
//!
//! `H` is the shell's handle for a blocked client (a pointer's address in the module, a number
//! in tests). The core only compares, orders and hashes it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

/// One lock: its database and its name (the part after `lock:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId {
    pub db: i32,
    pub name: Vec<u8>,
}

impl LockId {
    pub fn new(db: i32, name: &[u8]) -> Self {
        LockId {
            db,
            name: name.to_vec(),
        }
    }
}

/// What the shell must do to hand a lock to a waiter: write `token` with a lease of `ttl_ms`
/// starting now, then wake `handle` with success.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant<H> {
    pub handle: H,
    pub token: Box<[u8]>,
    /// The lease: the last of the served waiters' `ttl`s, as if each had acquired in turn.
    pub ttl_ms: i64,
    /// Later waiters queued with the same token: the lock is theirs too (a fresh acquire with
    /// the owner's token succeeds), so they are served `OK` with it. The group is one grant:
    /// it is taken back only if every member vanishes before any of them is answered.
    pub also: Vec<H>,
}

/// `at + ms` for times in milliseconds, saturating instead of overflowing: a time past
/// `i64::MAX` is "never".
pub fn later(at: i64, ms: i64) -> i64 {
    at.saturating_add(ms)
}

/// The furthest ahead a timer is ever armed, in milliseconds. Redis computes a timer's moment
/// as `now_us + period * 1000` in signed 64 bits: a period beyond ~9.2e15 ms wraps around to a
/// moment in the past, and the timer fires at once, for ever. A due time further away is
/// reached by arming again each time the timer fires.
pub const TIMER_HORIZON_MS: i64 = 60_000;

/// The period to arm a timer with at `now` for something due `at`: never negative, never
/// beyond the horizon.
pub fn timer_period(now: i64, at: i64) -> i64 {
    at.saturating_sub(now).clamp(0, TIMER_HORIZON_MS)
}

/// How a waiter left when the shell asked to remove it.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// It was not known (already served, or never queued).
    Unknown,
    /// It was still queued; it is gone and will never be handed the lock.
    Queued,
    /// The lock had already been written for it, but the reply never reached it: the shell
    /// takes the lock back if `lock` is still held by `token`.
    Granted { lock: Arc<LockId>, token: Box<[u8]> },
}

/// A due look at one lock.
#[derive(Debug, PartialEq, Eq)]
pub struct Check {
    pub lock: Arc<LockId>,
    /// Whether, if the lock is found free and nobody is waiting, python-redis-lock's waiters
    /// must be signalled (the lock ended by expiry, eviction or a foreign delete, which do not
    /// signal by themselves).
    pub signal_if_free: bool,
    /// A grant whose reply never reached its client, to take back if the lock is still held
    /// by this token (it could not be taken back at once: writes were paused).
    pub take_back: Option<Box<[u8]>>,
}

struct Waiter {
    seq: u64,
    lock: Arc<LockId>,
    token: Box<[u8]>,
    ttl_ms: i64,
    /// When its BLOCK time runs out (`i64::MAX`: never).
    deadline: i64,
    /// The server's id of the waiting client (`CLIENT UNBLOCK <id>` finds it by this).
    client: u64,
}

/// Arrival order of one lock's waiters. Removed waiters stay in `order` until they reach the
/// front or the queue is compacted: a removal is O(1), whatever the queue's length.
struct Queue<H> {
    order: VecDeque<(H, u64)>,
    live: usize,
    /// How many live waiters hold a token, by the token's hash: when one is served and others
    /// may hold its token, and only then, the queue is searched for them.
    tokens: HashMap<u32, u32>,
}

/// 32 bits of a token's hash: a collision only costs a search that finds nobody.
fn token_hash(token: &[u8]) -> u32 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(token) as u32
}

/// One grant of a lock to a token, written for one waiter or a same-token group: revocable
/// while none of its members has been answered.
struct GrantRecord {
    lock: Arc<LockId>,
    token: Box<[u8]>,
    /// Members neither answered nor gone yet.
    unanswered: usize,
    /// A member has been answered: someone was told it holds the lock.
    answered: bool,
}

struct Pending {
    at: i64,
    signal_if_free: bool,
    take_back: Option<Box<[u8]>>,
}

pub struct Core<H> {
    seq: u64,
    waiters: HashMap<H, Waiter>,
    queues: HashMap<Arc<LockId>, Queue<H>>,
    /// Granted waiters whose reply has not gone out yet, each with its grant's number (one
    /// for a whole same-token group).
    granted: HashMap<H, u64>,
    /// Those grants, by number.
    grants: HashMap<u64, GrantRecord>,
    clients: HashMap<u64, H>,
    pending: HashMap<Arc<LockId>, Pending>,
    due: BTreeSet<(i64, Arc<LockId>)>,
    /// Waiters' deadlines. The core, not Redis, ends waits: so a waiter is either handed the
    /// lock or timed out, decided in one place, never both.
    deadlines: BTreeSet<(i64, H)>,
}

impl<H: Copy + Eq + Hash + Ord> Default for Core<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy + Eq + Hash + Ord> Core<H> {
    pub fn new() -> Self {
        Core {
            seq: 0,
            waiters: HashMap::new(),
            queues: HashMap::new(),
            granted: HashMap::new(),
            grants: HashMap::new(),
            clients: HashMap::new(),
            pending: HashMap::new(),
            due: BTreeSet::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Queue a blocked client at the back of `lock`'s line, waiting until `deadline` at most.
    /// `client` is the server's id of the client (for `CLIENT UNBLOCK`).
    pub fn enqueue(
        &mut self,
        lock: &LockId,
        handle: H,
        client: u64,
        token: &[u8],
        ttl_ms: i64,
        deadline: Option<i64>,
    ) {
        self.remove_quietly(handle);
        let deadline = deadline.filter(|&at| at < i64::MAX); // the end of time is never
        self.seq += 1;
        let seq = self.seq;
        let lock = self.intern(lock);
        let queue = self.queues.entry(lock.clone()).or_insert_with(|| Queue {
            order: VecDeque::new(),
            live: 0,
            tokens: HashMap::new(),
        });
        queue.order.push_back((handle, seq));
        queue.live += 1;
        *queue.tokens.entry(token_hash(token)).or_insert(0) += 1;
        self.clients.insert(client, handle);
        self.waiters.insert(
            handle,
            Waiter {
                seq,
                lock,
                token: token.into(),
                ttl_ms,
                deadline: deadline.unwrap_or(i64::MAX),
                client,
            },
        );
        if let Some(at) = deadline {
            self.deadlines.insert((at, handle));
        }
    }

    /// Take every waiter whose deadline is `now` or earlier out of its queue: the shell
    /// answers them nil.
    pub fn take_timed_out(&mut self, now: i64) -> Vec<H> {
        let mut out = Vec::new();
        while let Some(&(at, handle)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.remove_quietly(handle);
            out.push(handle);
        }
        out
    }

    /// A place in the arrival order for a waiter the core does not queue (a python-redis-lock
    /// client blocked in `BLPOP`): later than every waiter queued so far, earlier than every
    /// waiter queued after.
    pub fn ticket(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The place in the arrival order of `lock`'s first live waiter.
    pub fn first_ticket(&self, lock: &LockId) -> Option<u64> {
        let queue = self.queues.get(lock)?;
        queue
            .order
            .iter()
            .find(|(h, seq)| matches!(self.waiters.get(h), Some(w) if w.seq == *seq))
            .map(|(_, seq)| *seq)
    }

    /// Whether any client is queued for `lock`.
    pub fn has_waiters(&self, lock: &LockId) -> bool {
        self.queues.contains_key(lock)
    }

    /// Number of module clients queued for `lock`.
    pub fn queued(&self, lock: &LockId) -> usize {
        self.queues.get(lock).map_or(0, |q| q.live)
    }

    /// Number of locks with module clients queued.
    pub fn locks_waited_for(&self) -> usize {
        self.queues.len()
    }

    /// Number of queued (not yet served) waiters, over all locks.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The queued waiter that is the client with server id `client`, if any.
    pub fn waiter_of_client(&self, client: u64) -> Option<H> {
        self.clients.get(&client).copied()
    }

    /// The lock is free: take the first live waiter off its queue, with every later waiter
    /// holding the same token. The first one's grant stays recorded until the shell confirms
    /// the reply went out (`delivered`) or the client vanished.
    pub fn pop_next(&mut self, lock: &LockId) -> Option<Grant<H>> {
        let handle = loop {
            let queue = self.queues.get_mut(lock)?;
            let Some((handle, seq)) = queue.order.pop_front() else {
                self.drop_queue(lock);
                return None;
            };
            if matches!(self.waiters.get(&handle), Some(w) if w.seq == seq) {
                break handle;
            }
        };
        let waiter = self.take_waiter(handle)?;
        let shared = self
            .queues
            .get(lock)
            .is_some_and(|q| q.tokens.contains_key(&token_hash(&waiter.token)));
        let mut grant = Grant {
            handle,
            token: waiter.token.clone(),
            ttl_ms: waiter.ttl_ms,
            also: Vec::new(),
        };
        if shared {
            let waiters = &self.waiters;
            let same: Vec<H> = self.queues.get(lock).map_or(Vec::new(), |q| {
                q.order
                    .iter()
                    .filter(|(h, s)| {
                        matches!(waiters.get(h), Some(w) if w.seq == *s && w.token == waiter.token)
                    })
                    .map(|(h, _)| *h)
                    .collect()
            });
            for h in same {
                if let Some(w) = self.take_waiter(h) {
                    grant.ttl_ms = w.ttl_ms;
                    grant.also.push(h);
                }
            }
        }
        self.seq += 1;
        let number = self.seq;
        for h in std::iter::once(&handle).chain(&grant.also) {
            self.granted.insert(*h, number);
        }
        let record = GrantRecord {
            lock: waiter.lock,
            token: waiter.token,
            unanswered: 1 + grant.also.len(),
            answered: false,
        };
        self.grants.insert(number, record);
        self.shrink_if_idle();
        Some(grant)
    }

    /// Take every live waiter of `lock` off its queue (the lock is no longer served here),
    /// first in line first.
    pub fn take_all(&mut self, lock: &LockId) -> Vec<H> {
        let Some(queue) = self.queues.get(lock) else {
            return Vec::new();
        };
        let waiters = &self.waiters;
        let live: Vec<H> = queue
            .order
            .iter()
            .filter(|(h, seq)| matches!(waiters.get(h), Some(w) if w.seq == *seq))
            .map(|(h, _)| *h)
            .collect();
        for h in &live {
            self.remove_quietly(*h);
        }
        live
    }

    /// The token a granted waiter was handed the lock with (until `delivered`).
    pub fn granted_token(&self, handle: H) -> Option<Vec<u8>> {
        self.granted_to(handle).map(|(_, token)| token.to_vec())
    }

    /// The lock and token a granted waiter was handed (until `delivered`).
    pub fn granted_to(&self, handle: H) -> Option<(&LockId, &[u8])> {
        let number = self.granted.get(&handle)?;
        self.grants.get(number).map(|g| (&*g.lock, &*g.token))
    }

    /// `handle`'s grant has one member fewer to answer (answered if `answered`): the record
    /// itself, once no member is left, is returned and forgotten.
    fn settle(&mut self, handle: H, answered: bool) -> Option<GrantRecord> {
        let number = self.granted.remove(&handle)?;
        let g = self.grants.get_mut(&number)?;
        g.unanswered -= 1;
        g.answered |= answered;
        if g.unanswered > 0 {
            return None;
        }
        let done = self.grants.remove(&number);
        if self.granted.is_empty() && self.granted.capacity() > 64 {
            self.granted.shrink_to_fit();
            self.grants.shrink_to_fit();
        }
        done
    }

    /// The reply to a granted waiter went out: the grant (and its whole same-token group's)
    /// is no longer revocable.
    pub fn delivered(&mut self, handle: H) {
        self.settle(handle, true);
    }

    /// A waiter timed out, was unblocked or disconnected. A granted waiter that vanished
    /// unanswered hands its grant back only if it was the last of its group to be answered and
    /// nobody in the group was: otherwise someone was, or will be, told `OK` for that token.
    pub fn remove(&mut self, handle: H) -> Removed {
        if self.granted.contains_key(&handle) {
            return match self.settle(handle, false) {
                Some(g) if !g.answered => Removed::Granted {
                    lock: g.lock,
                    token: g.token,
                },
                _ => Removed::Unknown,
            };
        }
        if self.remove_quietly(handle) {
            Removed::Queued
        } else {
            Removed::Unknown
        }
    }

    fn remove_quietly(&mut self, handle: H) -> bool {
        let Some(waiter) = self.take_waiter(handle) else {
            return false;
        };
        if let Some(queue) = self.queues.get_mut(&waiter.lock) {
            if queue.order.len() > 2 * queue.live + 16 {
                let waiters = &self.waiters;
                queue
                    .order
                    .retain(|(h, seq)| matches!(waiters.get(h), Some(w) if w.seq == *seq));
            }
        }
        self.shrink_if_idle();
        true
    }

    /// Forget a live waiter: its deadline, its client id, its place in its queue's counts (the
    /// queue itself goes when its last live waiter does).
    fn take_waiter(&mut self, handle: H) -> Option<Waiter> {
        let waiter = self.waiters.remove(&handle)?;
        if waiter.deadline != i64::MAX {
            self.deadlines.remove(&(waiter.deadline, handle));
        }
        if self.clients.get(&waiter.client) == Some(&handle) {
            self.clients.remove(&waiter.client);
        }
        let mut empty = false;
        if let Some(queue) = self.queues.get_mut(&waiter.lock) {
            queue.live -= 1;
            empty = queue.live == 0;
            let hash = token_hash(&waiter.token);
            if let Some(n) = queue.tokens.get_mut(&hash) {
                *n -= 1;
                if *n == 0 {
                    queue.tokens.remove(&hash);
                }
            }
        }
        if empty {
            self.drop_queue(&waiter.lock);
        }
        Some(waiter)
    }

    /// A lock's last waiter is gone: its queue goes, and so does a look at the lock that only
    /// a waiter needed (its holder's lease end), so no timer stays armed for nobody.
    fn drop_queue(&mut self, lock: &LockId) {
        self.queues.remove(lock);
        let needed = self
            .pending
            .get(lock)
            .is_some_and(|p| p.signal_if_free || p.take_back.is_some());
        if !needed {
            if let Some((lock, p)) = self.pending.remove_entry(lock) {
                self.due.remove(&(p.at, lock));
            }
        }
    }

    /// Give memory back once a burst of waiters is over: maps never shrink by themselves.
    fn shrink_if_idle(&mut self) {
        if self.waiters.is_empty() && self.waiters.capacity() > 64 {
            self.waiters.shrink_to_fit();
            self.queues.shrink_to_fit();
            self.granted.shrink_to_fit();
            self.clients.shrink_to_fit();
        }
    }

    /// Look at `lock` again at `at` (or earlier, if already due earlier). `at == i64::MAX`
    /// is never.
    pub fn schedule(&mut self, lock: &LockId, at: i64, signal_if_free: bool) {
        self.schedule_check(lock, at, signal_if_free, None);
    }

    /// Take the lock back from `token` (a grant whose reply never arrived) at the next look
    /// at `now` or later when the shell can write.
    pub fn schedule_take_back(&mut self, lock: &LockId, token: &[u8], now: i64) {
        self.schedule_check(lock, now, false, Some(token.into()));
    }

    fn schedule_check(
        &mut self,
        lock: &LockId,
        at: i64,
        signal_if_free: bool,
        take_back: Option<Box<[u8]>>,
    ) {
        let at = if signal_if_free || take_back.is_some() {
            at.min(i64::MAX - 1)
        } else if at == i64::MAX {
            return; // a lease that never ends: nothing to look at
        } else {
            at
        };
        let lock = self.intern(lock);
        let pending = self.pending.entry(lock.clone()).or_insert(Pending {
            at: i64::MAX,
            signal_if_free: false,
            take_back: None,
        });
        pending.signal_if_free |= signal_if_free;
        if take_back.is_some() {
            pending.take_back = take_back;
        }
        if at < pending.at {
            if pending.at != i64::MAX {
                self.due.remove(&(pending.at, lock.clone()));
            }
            pending.at = at;
            self.due.insert((at, lock));
        }
    }

    /// Look at every lock that has waiters (in `db`, or in all databases) again at `at`:
    /// after a flush, a database swap or a reload, any of them may have changed.
    pub fn schedule_all(&mut self, db: Option<i32>, at: i64) {
        let locks: Vec<Arc<LockId>> = self
            .queues
            .keys()
            .filter(|l| db.is_none_or(|d| l.db == d))
            .cloned()
            .collect();
        for lock in locks {
            self.schedule(&lock, at, false);
        }
    }

    /// The earliest moment a look at a lock is due, if any.
    pub fn next_check(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// The earliest waiter's deadline, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The earliest moment a check or a waiter's deadline is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.next_check()
            .into_iter()
            .chain(self.next_deadline())
            .min()
    }

    /// Every check due at `now`, earliest first. A check that can change nothing (no waiters,
    /// nothing to signal or take back) is dropped here.
    pub fn take_due(&mut self, now: i64) -> Vec<Check> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            let Some((_, lock)) = self.due.pop_first() else {
                break;
            };
            let Some(p) = self.pending.remove(&lock) else {
                continue;
            };
            if p.signal_if_free || p.take_back.is_some() || self.queues.contains_key(&lock) {
                out.push(Check {
                    lock,
                    signal_if_free: p.signal_if_free,
                    take_back: p.take_back,
                });
            }
        }
        out
    }

    /// Share one allocation of a lock's id between its queue, waiters and checks.
    fn intern(&self, lock: &LockId) -> Arc<LockId> {
        if let Some((k, _)) = self.queues.get_key_value(lock) {
            return k.clone();
        }
        if let Some((k, _)) = self.pending.get_key_value(lock) {
            return k.clone();
        }
        Arc::new(lock.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(name: &str) -> LockId {
        LockId::new(0, name.as_bytes())
    }

    fn served(core: &mut Core<u32>, name: &str) -> Option<(u32, String)> {
        core.pop_next(&lock(name)).map(|g| {
            core.delivered(g.handle);
            (g.handle, String::from_utf8(g.token.to_vec()).unwrap())
        })
    }

    #[test]
    fn waiters_are_served_first_come_first_served() {
        let mut core = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"t1", 1000, None);
        core.enqueue(&lock("a"), 2, 2, b"t2", 2000, None);
        core.enqueue(&lock("b"), 3, 3, b"t3", 3000, None);
        core.enqueue(&lock("a"), 4, 4, b"t4", 4000, None);
        let g = core.pop_next(&lock("a")).unwrap();
        assert_eq!((g.handle, &*g.token, g.ttl_ms), (1, &b"t1"[..], 1000));
        assert_eq!(served(&mut core, "a"), Some((2, "t2".into())));
        assert_eq!(served(&mut core, "a"), Some((4, "t4".into())));
        assert_eq!(served(&mut core, "a"), None);
        assert_eq!(served(&mut core, "b"), Some((3, "t3".into())));
        assert!(!core.has_waiters(&lock("a")));
    }

    #[test]
    fn a_removed_waiter_is_never_served() {
        let mut core = Core::new();
        for h in 1..=5 {
            core.enqueue(
                &lock("a"),
                h,
                u64::from(h),
                format!("t{h}").as_bytes(),
                1000,
                None,
            );
        }
        assert_eq!(core.remove(1), Removed::Queued);
        assert_eq!(core.remove(3), Removed::Queued);
        assert_eq!(core.remove(3), Removed::Unknown);
        let order: Vec<u32> =
            std::iter::from_fn(|| served(&mut core, "a").map(|(h, _)| h)).collect();
        assert_eq!(order, vec![2, 4, 5]);
        assert_eq!(core.waiting(), 0);
    }

    #[test]
    fn take_all_empties_one_queue_in_order_and_leaves_the_others() {
        let mut core = Core::new();
        for h in 1..=4 {
            core.enqueue(
                &lock("a"),
                h,
                u64::from(h),
                b"t",
                1000,
                Some(5000 + i64::from(h)),
            );
        }
        core.enqueue(&lock("b"), 9, 9, b"t9", 1000, None);
        core.remove(2);
        assert_eq!(core.take_all(&lock("a")), vec![1, 3, 4]);
        assert_eq!(core.take_all(&lock("a")), Vec::<u32>::new());
        assert!(!core.has_waiters(&lock("a")));
        assert_eq!(core.remove(3), Removed::Unknown); // answered: nothing left to remove
        assert_eq!(core.waiter_of_client(1), None);
        assert!(core.take_timed_out(i64::MAX).is_empty());
        assert_eq!(served(&mut core, "b"), Some((9, "t9".into())));
        assert_eq!(core.waiting(), 0);
    }

    #[test]
    fn a_handle_reused_after_removal_takes_its_new_place() {
        let mut core = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"old", 1000, None);
        core.enqueue(&lock("a"), 2, 2, b"two", 1000, None);
        core.remove(1);
        core.enqueue(&lock("a"), 1, 1, b"new", 1000, None);
        assert_eq!(served(&mut core, "a"), Some((2, "two".into())));
        assert_eq!(served(&mut core, "a"), Some((1, "new".into())));
        assert_eq!(served(&mut core, "a"), None);
    }

    #[test]
    fn removal_of_a_granted_waiter_tells_which_lock_to_take_back() {
        let mut core = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"t1", 1000, None);
        let g = core.pop_next(&lock("a")).unwrap();
        match core.remove(g.handle) {
            Removed::Granted { lock: l, token } => {
                assert_eq!(*l, lock("a"));
                assert_eq!(&*token, b"t1");
            }
            other => panic!("{other:?}"),
        }
        // Once delivered, a grant is no longer revocable.
        core.enqueue(&lock("a"), 2, 2, b"t2", 1000, None);
        let g = core.pop_next(&lock("a")).unwrap();
        core.delivered(g.handle);
        assert_eq!(core.remove(g.handle), Removed::Unknown);
    }

    #[test]
    fn a_same_token_group_is_taken_back_only_if_all_vanish_unanswered() {
        // (which members vanish, in order; which are answered first) -> taken back by the last?
        let rows: &[(&[u32], &[u32], Option<u32>)] = &[
            (&[1], &[], None),          // the first vanishes: 2 and 3 still hold the token
            (&[1, 2, 3], &[], Some(3)), // all vanish unanswered: the last gives it back
            (&[3, 1, 2], &[], Some(2)),
            (&[1, 2], &[3], None), // 3 was told OK: never taken back
            (&[2, 3], &[1], None),
        ];
        for (vanish, answered, taken_back_by) in rows {
            let mut core = Core::new();
            for h in 1..=3 {
                core.enqueue(&lock("a"), h, h.into(), b"T", 1000, None);
            }
            core.enqueue(&lock("a"), 4, 4, b"U", 1000, None);
            let g = core.pop_next(&lock("a")).unwrap();
            assert_eq!((g.handle, g.also.clone()), (1, vec![2, 3]));
            for h in *answered {
                core.delivered(*h);
            }
            let mut back = None;
            for h in *vanish {
                if let Removed::Granted { token, .. } = core.remove(*h) {
                    assert_eq!(&*token, b"T");
                    assert!(back.is_none(), "taken back twice");
                    back = Some(*h);
                }
            }
            assert_eq!(
                back, *taken_back_by,
                "vanish {vanish:?}, answered {answered:?}"
            );
            assert_eq!(core.queued(&lock("a")), 1, "U still waits");
        }
    }

    #[test]
    fn checks_come_due_at_their_time_and_keep_the_earliest() {
        // Table: (schedule at, signal) pairs, then which names are due at each `now`.
        let mut core: Core<u32> = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"t", 1000, None);
        core.enqueue(&lock("b"), 2, 2, b"t", 1000, None);
        core.schedule(&lock("a"), 100, false);
        core.schedule(&lock("a"), 300, false); // later: the earlier one stands
        core.schedule(&lock("b"), 200, false);
        core.schedule(&lock("b"), 150, false); // earlier: replaces
        assert_eq!(core.next_due(), Some(100));
        let names = |v: Vec<Check>| -> Vec<Vec<u8>> {
            v.into_iter().map(|c| c.lock.name.clone()).collect()
        };
        for (now, want) in [
            (99, vec![]),
            (100, vec![b"a".to_vec()]),
            (149, vec![]),
            (150, vec![b"b".to_vec()]),
            (1000, vec![]),
        ] {
            assert_eq!(names(core.take_due(now)), want, "at {now}");
        }
        assert_eq!(core.next_due(), None);
    }

    #[test]
    fn a_check_that_can_change_nothing_is_dropped() {
        let mut core: Core<u32> = Core::new();
        core.schedule(&lock("idle"), 10, false);
        core.schedule(&lock("expired"), 10, true);
        let due = core.take_due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(&due[0].lock.name[..], b"expired");
        assert!(due[0].signal_if_free);
    }

    #[test]
    fn schedule_all_covers_the_locks_with_waiters_of_one_database() {
        let mut core: Core<u32> = Core::new();
        core.enqueue(&LockId::new(0, b"a"), 1, 1, b"t", 1, None);
        core.enqueue(&LockId::new(1, b"b"), 2, 2, b"t", 1, None);
        core.schedule_all(Some(1), 5);
        let due = core.take_due(5);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].lock.db, 1);
        core.schedule_all(None, 6);
        assert_eq!(core.take_due(6).len(), 2);
    }

    #[test]
    fn waiters_time_out_at_their_deadline_and_are_never_served_after() {
        let mut core: Core<u32> = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"t1", 1000, Some(100));
        core.enqueue(&lock("a"), 2, 2, b"t2", 1000, None);
        core.enqueue(&lock("a"), 3, 3, b"t3", 1000, Some(50));
        assert_eq!(core.next_due(), Some(50));
        assert_eq!(core.take_timed_out(49), Vec::<u32>::new());
        assert_eq!(core.take_timed_out(100), vec![3, 1]);
        assert_eq!(core.next_due(), None);
        assert_eq!(served(&mut core, "a"), Some((2, "t2".into())));
        assert_eq!(served(&mut core, "a"), None);
        // A waiter served before its deadline is no longer timed out.
        core.enqueue(&lock("b"), 4, 4, b"t4", 1000, Some(10));
        assert_eq!(served(&mut core, "b"), Some((4, "t4".into())));
        assert_eq!(core.take_timed_out(20), Vec::<u32>::new());
    }

    /// Property: against a simple model (a Vec in arrival order), random enqueues, removals and
    /// pops always serve exactly the model's first live waiter, and never a removed one.
    #[test]
    fn random_operations_match_a_fifo_model() {
        use rand::{RngExt, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut core: Core<u32> = Core::new();
            let mut model: Vec<Vec<u32>> = vec![Vec::new(); 3];
            let mut next = 0u32;
            for _ in 0..300 {
                let l = rng.random_range(0..3usize);
                let name = format!("l{l}");
                match rng.random_range(0..10) {
                    0..=4 => {
                        next += 1;
                        let token = format!("t{next}");
                        core.enqueue(
                            &lock(&name),
                            next,
                            u64::from(next),
                            token.as_bytes(),
                            1,
                            None,
                        );
                        model[l].push(next);
                    }
                    5..=7 => {
                        let all: Vec<u32> = model.iter().flatten().copied().collect();
                        if all.is_empty() {
                            continue;
                        }
                        let h = all[rng.random_range(0..all.len())];
                        assert_eq!(core.remove(h), Removed::Queued);
                        for q in &mut model {
                            q.retain(|x| *x != h);
                        }
                    }
                    _ => {
                        let want = if model[l].is_empty() {
                            None
                        } else {
                            Some(model[l].remove(0))
                        };
                        assert_eq!(
                            served(&mut core, &name).map(|(h, _)| h),
                            want,
                            "seed {seed}"
                        );
                    }
                }
                assert_eq!(core.waiting(), model.iter().map(Vec::len).sum::<usize>());
                for (i, q) in model.iter().enumerate() {
                    assert_eq!(core.has_waiters(&lock(&format!("l{i}"))), !q.is_empty());
                }
            }
        }
    }

    #[test]
    fn waiters_with_the_owners_token_are_served_with_it() {
        let mut core: Core<u32> = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"same", 1000, None);
        core.enqueue(&lock("a"), 2, 2, b"other", 1000, None);
        core.enqueue(&lock("a"), 3, 3, b"same", 3000, Some(50));
        let g = core.pop_next(&lock("a")).unwrap();
        assert_eq!((g.handle, g.also.clone(), g.ttl_ms), (1, vec![3], 3000));
        assert_eq!(core.take_timed_out(100), Vec::<u32>::new());
        assert_eq!(served(&mut core, "a"), Some((2, "other".into())));
        assert_eq!(served(&mut core, "a"), None);
    }

    #[test]
    fn the_last_waiter_leaving_drops_the_lease_end_look() {
        let mut core: Core<u32> = Core::new();
        core.enqueue(&lock("a"), 1, 1, b"t", 1000, Some(100));
        core.schedule(&lock("a"), 1_000_000, false);
        assert_eq!(core.next_check(), Some(1_000_000));
        assert_eq!(core.take_timed_out(100), vec![1]);
        assert_eq!(core.next_due(), None);
        // A look that signals python-redis-lock's waiters or takes a grant back stays.
        core.enqueue(&lock("b"), 2, 2, b"t", 1000, None);
        core.schedule(&lock("b"), 5, true);
        core.schedule_take_back(&lock("c"), b"t", 5);
        core.remove(2);
        let due = core.take_due(5);
        assert_eq!(due.len(), 2);
        assert_eq!(due[1].take_back.as_deref(), Some(&b"t"[..]));
    }

    #[test]
    fn client_ids_find_queued_waiters_only() {
        let mut core: Core<u32> = Core::new();
        core.enqueue(&lock("a"), 1, 41, b"t1", 1000, None);
        core.enqueue(&lock("a"), 2, 42, b"t2", 1000, None);
        assert_eq!(core.waiter_of_client(42), Some(2));
        let _granted = core.pop_next(&lock("a")).unwrap();
        assert_eq!(core.waiter_of_client(41), None);
        core.remove(2);
        assert_eq!(core.waiter_of_client(42), None);
    }

    /// Times at the edges: 0, 1, the largest ttl and BLOCK the commands accept, `i64::MAX`,
    /// and the values around which Redis's microsecond arithmetic wraps (2^63/1000 ms,
    /// 2^64/10^6 s). Whatever the mix, sums saturate, timers stay within the horizon, nothing
    /// is due before its time, and a lease or wait that never ends never comes due.
    #[test]
    fn tickets_interleave_with_queued_waiters() {
        let mut core: Core<u32> = Core::new();
        let a = LockId::new(0, b"a");
        assert_eq!(core.first_ticket(&a), None);
        let python = core.ticket();
        core.enqueue(&a, 1, 11, b"t1", 1000, None);
        let first = core.first_ticket(&a).unwrap();
        assert!(python < first, "a ticket drawn before a waiter comes first");
        core.enqueue(&a, 2, 12, b"t2", 1000, None);
        let later_python = core.ticket();
        assert_eq!(core.first_ticket(&a), Some(first));
        core.remove(1);
        let second = core.first_ticket(&a).unwrap();
        assert!(first < second && second < later_python);
    }

    #[test]
    fn extreme_times_never_wrap() {
        use rand::{RngExt, SeedableRng};
        const MAX_MS: i64 = i64::MAX / 4;
        let edges: Vec<i64> = vec![
            0,
            1,
            2,
            999,
            1_000,
            60_000,
            1_700_000_000_000,
            MAX_MS / 1000 * 1000,
            MAX_MS,
            i64::MAX / 1000 - 1,
            i64::MAX / 1000,
            i64::MAX / 1000 + 1,
            18_446_744_073_709,
            18_446_744_073_720 * 1000,
            i64::MAX - 1,
            i64::MAX,
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..2000 {
            let pick = |rng: &mut rand::rngs::StdRng| edges[rng.random_range(0..edges.len())];
            let now = [0, 1, 1_700_000_000_000, i64::MAX - 1][round % 4];
            let (ttl, block, expiry) = (pick(&mut rng), pick(&mut rng), pick(&mut rng));
            assert!(later(now, ttl) >= now && later(now, ttl) >= ttl.min(now.max(ttl)));
            let period = timer_period(now, later(now, ttl));
            assert!((0..=TIMER_HORIZON_MS).contains(&period), "{now} {ttl}");
            // Redis's own arithmetic on the period stays far from overflow.
            assert!(period.checked_mul(1000).is_some_and(|us| us < i64::MAX / 2));

            let mut core: Core<u32> = Core::new();
            let deadline = (block > 0).then(|| later(now, later(block, 1)));
            core.enqueue(&lock("a"), 1, 1, b"w", ttl, deadline);
            core.schedule(&lock("a"), later(expiry, 1), false);
            let next = core.next_due();
            if let Some(at) = next {
                assert!(at < i64::MAX, "something due at the end of time");
                assert!(timer_period(now, at) <= TIMER_HORIZON_MS);
            }
            // Nothing comes due before its moment.
            let before = now.min(later(expiry, 1)).min(deadline.unwrap_or(i64::MAX)) - 1;
            if before >= 0 && before < now {
                assert!(core.take_due(before).is_empty());
            }
            let timed_out = core.take_timed_out(now);
            assert_eq!(timed_out.is_empty(), deadline.is_none_or(|d| d > now));
            if timed_out.is_empty() {
                let g = core.pop_next(&lock("a")).unwrap();
                assert_eq!(g.ttl_ms, ttl);
                assert!(later(now, g.ttl_ms) >= now);
            }
            assert_eq!(core.waiting(), 0);
            // With nobody waiting, the lease end look is gone too.
            assert!(core.next_due().is_none(), "round {round}");
        }
    }
}
