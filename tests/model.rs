//! Model-based randomized test against a real server.
//!
//! A small model holds what the server should hold: per lock, the owner's token (or none),
//! the lease length, and the first-come-first-served queue of module waiters. Random steps —
//! LOCK.ACQUIRE with and without BLOCK, LOCK.RELEASE / LOCK.RENEW by owner and non-owner,
//! python-redis-lock's acquire (`SET NX EX`) and release script, foreign `DEL`, a forced
//! expiry, `LOCK.RESETALL`, `FLUSHDB`, waiters hanging up or `CLIENT UNBLOCK`ed, a short
//! `BLOCK` running out — are applied to both, and after every step the server must agree:
//! `LOCK.OWNER` of every lock, the set of `lock:*` keys, every held lock's TTL, python's
//! wake-up signal where one is due (with `rlock.python-signal always`), and `blocked_clients` = the model's total queue length.
//! Every waiter's reply must be the model's (`OK` when handed the lock, nil when unblocked).
//!
//! Steps whose hand-over is immediate (LOCK.RELEASE) are checked at once; steps whose
//! hand-over the module defers to its timer (foreign DEL, expiry, python release, flushes)
//! are waited for with a deadline.
//!
//! Fixed seeds, so a failure reproduces: the panic message says which seed and step, and the
//! last steps taken. Environment knobs (all optional):
//! `RLOCK_MODEL_SEED=<n>` runs only seed n; `RLOCK_MODEL_SEEDS=<count>` (default 20);
//! `RLOCK_MODEL_STEPS=<n>` (default 150); `RLOCK_MODEL_TRACE=1` prints every step.
#![allow(clippy::needless_range_loop)] // locks are numbered; the index is the lock

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const LOCKS: [&str; 3] = ["m0", "m1", "m2"];
const MAX_WAITERS: usize = 6;
/// Leases are 30..=120 s: nothing ever runs out by itself during a run.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 30..=120;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// In the lock's queue; no reply yet.
    Waiting,
    /// Handed the lock: its reply must be OK.
    Granted,
    /// Left the queue by CLIENT UNBLOCK: its reply must be nil.
    Unblocked,
    /// Hung up while waiting: never handed the lock.
    Gone,
}

struct Waiter {
    conn: Option<redis::Connection>,
    id: i64,
    lock: usize,
    token: String,
    ttl: u64,
    outcome: Outcome,
    /// Its reply has been read and compared.
    checked: bool,
}

#[derive(Clone, Default)]
struct Held {
    token: String,
    ttl_ms: i64,
    /// When the lease (last) started, as far as the test can tell.
    since: Option<Instant>,
}

#[derive(Default)]
struct LockModel {
    owner: Option<Held>,
    queue: VecDeque<usize>,
}

struct Run {
    seed: u64,
    step: usize,
    rng: StdRng,
    server: Server,
    c: redis::Connection,
    locks: Vec<LockModel>,
    waiters: Vec<Waiter>,
    trace: VecDeque<String>,
    verbose: bool,
    /// Locks whose python signal (`lock-signal:<n>`) must appear after this step.
    expect_signal: Vec<usize>,
}

/// How the server is expected to reach the model's state after a step.
#[derive(PartialEq)]
enum Settle {
    /// Already there when the step's reply came.
    Now,
    /// The module's timer finishes the job: wait with a deadline.
    Deferred,
}

impl Run {
    fn new(seed: u64) -> Run {
        let server = Server::start();
        let mut c = server.conn();
        // The model says where a lock becomes free; signalling every such lock is
        // `rlock.python-signal always` (tests/python_aware.rs covers `auto`).
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("rlock.python-signal")
            .arg("always")
            .query(&mut c)
            .unwrap();
        Run {
            seed,
            step: 0,
            rng: StdRng::seed_from_u64(seed),
            server,
            c,
            locks: (0..LOCKS.len()).map(|_| LockModel::default()).collect(),
            waiters: Vec::new(),
            trace: VecDeque::new(),
            verbose: std::env::var_os("RLOCK_MODEL_TRACE").is_some(),
            expect_signal: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        if self.verbose {
            eprintln!("seed {} step {}: {what}", self.seed, self.step);
        }
        self.trace.push_back(format!("step {}: {what}", self.step));
        if self.trace.len() > 25 {
            self.trace.pop_front();
        }
    }

    /// Where we are, for assertion messages.
    fn at(&self) -> String {
        let mut s = format!(
            "\n  seed {} step {} (reproduce: RLOCK_MODEL_SEED={} cargo test --release --test model)\n  model:",
            self.seed, self.step, self.seed
        );
        for (i, l) in self.locks.iter().enumerate() {
            let q: Vec<&str> = l
                .queue
                .iter()
                .map(|w| self.waiters[*w].token.as_str())
                .collect();
            s.push_str(&format!(
                "\n    {}: owner {:?} queue {:?}",
                LOCKS[i],
                l.owner.as_ref().map(|h| h.token.as_str()),
                q
            ));
        }
        s.push_str("\n  last steps:");
        for t in &self.trace {
            s.push_str("\n    ");
            s.push_str(t);
        }
        s
    }

    fn token(&mut self, kind: &str) -> String {
        format!(
            "s{}-{}-{kind}{}",
            self.seed,
            self.step,
            self.rng.random_range(0..1000u32)
        )
    }

    fn queued(&self) -> i64 {
        self.locks.iter().map(|l| l.queue.len() as i64).sum()
    }

    fn owner_token(&self, lock: usize) -> Option<String> {
        self.locks[lock].owner.as_ref().map(|h| h.token.clone())
    }

    /// A token that does not own `lock`: a fresh one, a queued waiter's, or another lock's owner.
    fn other_token(&mut self, lock: usize) -> String {
        let own = self.owner_token(lock);
        let mut candidates: Vec<String> = Vec::new();
        for w in &self.locks[lock].queue {
            candidates.push(self.waiters[*w].token.clone());
        }
        for (i, l) in self.locks.iter().enumerate() {
            if i != lock {
                if let Some(h) = &l.owner {
                    candidates.push(h.token.clone());
                }
            }
        }
        candidates.retain(|t| Some(t) != own.as_ref());
        if !candidates.is_empty() && self.rng.random_bool(0.5) {
            let i = self.rng.random_range(0..candidates.len());
            return candidates[i].clone();
        }
        self.token("x")
    }

    fn set_owner(&mut self, lock: usize, token: String, ttl: u64) {
        self.locks[lock].owner = Some(Held {
            token,
            ttl_ms: ttl as i64 * 1000,
            since: Some(Instant::now()),
        });
    }

    /// The lock is let go: the model hands it to the first queued waiter, or frees it.
    /// Returns whether a waiter took it.
    fn model_free(&mut self, lock: usize) -> bool {
        match self.locks[lock].queue.pop_front() {
            Some(w) => {
                self.waiters[w].outcome = Outcome::Granted;
                let (token, ttl) = (self.waiters[w].token.clone(), self.waiters[w].ttl);
                self.set_owner(lock, token, ttl);
                true
            }
            None => {
                self.locks[lock].owner = None;
                false
            }
        }
    }

    fn waiting_ones(&self) -> Vec<usize> {
        (0..self.waiters.len())
            .filter(|w| self.waiters[*w].outcome == Outcome::Waiting)
            .collect()
    }

    fn remove_from_queue(&mut self, w: usize) {
        let lock = self.waiters[w].lock;
        self.locks[lock].queue.retain(|x| *x != w);
    }

    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match cmd.query(&mut self.c) {
            Ok(v) => v,
            Err(e) => panic!("{:?} failed: {e}{}", cmd_text(cmd), self.at()),
        }
    }

    // ---- steps ----

    fn one_step(&mut self) {
        let lock = self.rng.random_range(0..LOCKS.len());
        let held = self.locks[lock].owner.is_some();
        let room = self.waiters_waiting() < MAX_WAITERS;
        let any_waiting = self.waiters_waiting() > 0;
        // Weighted choice; steps that make no sense right now fall through to a plain acquire.
        let roll = self.rng.random_range(0..100u32);
        let settle = match roll {
            0..=11 => self.acquire(lock),
            12..=31 if room => self.acquire_blocking(lock),
            32..=43 if held => self.release_by_owner(lock),
            44..=47 => self.release_by_other(lock),
            48..=52 => self.renew(lock),
            53..=59 => self.python_acquire(lock),
            60..=66 if held => self.python_release(lock),
            67..=69 => self.python_release_other(lock),
            70..=74 if held => self.foreign_del(lock),
            75..=80 if held => self.forced_expiry(lock),
            81..=85 if any_waiting => self.waiter_hangs_up(),
            86..=90 if any_waiting => self.client_unblock(),
            91..=92 => self.client_unblock_not_waiting(),
            93..=94 if held && room => self.short_block_runs_out(lock),
            95 => self.resetall(),
            96 => self.flushdb(),
            97..=98 if held => self.del_then_acquire_in_multi(lock),
            _ => self.acquire(lock),
        };
        self.check(settle);
    }

    fn waiters_waiting(&self) -> usize {
        self.queued() as usize
    }

    fn acquire(&mut self, lock: usize) -> Settle {
        let own = self.owner_token(lock);
        let token = match &own {
            Some(t) if self.rng.random_bool(0.3) => t.clone(),
            Some(_) => self.other_token(lock),
            None => self.token("m"),
        };
        let ttl = self.rng.random_range(TTL_RANGE);
        let r: Option<String> = self.query(&acquire(LOCKS[lock], &token, ttl, None));
        self.note(format!(
            "LOCK.ACQUIRE {} {token} {ttl} -> {r:?}",
            LOCKS[lock]
        ));
        let want = match own {
            None => {
                self.set_owner(lock, token, ttl);
                Some("OK".to_string())
            }
            Some(t) if t == token => {
                self.set_owner(lock, token, ttl);
                Some("OK".to_string())
            }
            Some(_) => None,
        };
        assert_eq!(r, want, "LOCK.ACQUIRE reply{}", self.at());
        Settle::Now
    }

    /// On a held lock: a new waiter on its own connection, its reply read later. On a free
    /// lock, or by the owner's own token: answered at once.
    fn acquire_blocking(&mut self, lock: usize) -> Settle {
        let own = self.owner_token(lock);
        let by_owner = own.is_some() && self.rng.random_bool(0.1);
        let token = if by_owner {
            own.clone().unwrap()
        } else {
            self.token("w")
        };
        let ttl = self.rng.random_range(TTL_RANGE);
        // 0 = no limit; otherwise far longer than any run.
        let block = if self.rng.random_bool(0.5) {
            0
        } else {
            3_600_000
        };
        let mut conn = self.server.conn();
        if own.is_none() || by_owner {
            let r: Option<String> = acquire(LOCKS[lock], &token, ttl, Some(block))
                .query(&mut conn)
                .unwrap();
            self.note(format!(
                "LOCK.ACQUIRE {} {token} {ttl} BLOCK {block} (free or own) -> {r:?}",
                LOCKS[lock]
            ));
            assert_eq!(r.as_deref(), Some("OK"), "answered at once{}", self.at());
            self.set_owner(lock, token, ttl);
            return Settle::Now;
        }
        let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn).unwrap();
        let cmd = acquire(LOCKS[lock], &token, ttl, Some(block));
        conn.send_packed_command(&cmd.get_packed_command()).unwrap();
        let w = self.waiters.len();
        self.waiters.push(Waiter {
            conn: Some(conn),
            id,
            lock,
            token: token.clone(),
            ttl,
            outcome: Outcome::Waiting,
            checked: false,
        });
        self.locks[lock].queue.push_back(w);
        self.note(format!(
            "LOCK.ACQUIRE {} {token} {ttl} BLOCK {block} (client {id}) -> waits",
            LOCKS[lock]
        ));
        // Wait until it is really queued, so arrival order is the model's.
        self.wait_blocked();
        Settle::Now
    }

    fn release_by_owner(&mut self, lock: usize) -> Settle {
        let token = self.owner_token(lock).unwrap();
        let r = release(&mut self.c, LOCKS[lock], &token);
        self.note(format!(
            "LOCK.RELEASE {} {token} (owner) -> {r}",
            LOCKS[lock]
        ));
        assert_eq!(r, 1, "release by the owner{}", self.at());
        if !self.model_free(lock) {
            self.expect_signal.push(lock);
        }
        // The hand-over happens inside RELEASE: no gap, checked at once.
        Settle::Now
    }

    fn release_by_other(&mut self, lock: usize) -> Settle {
        let token = self.other_token(lock);
        let r = release(&mut self.c, LOCKS[lock], &token);
        self.note(format!(
            "LOCK.RELEASE {} {token} (not owner) -> {r}",
            LOCKS[lock]
        ));
        assert_eq!(r, 0, "release by a non-owner{}", self.at());
        Settle::Now
    }

    fn renew(&mut self, lock: usize) -> Settle {
        let own = self.owner_token(lock);
        let token = match &own {
            Some(t) if self.rng.random_bool(0.7) => t.clone(),
            _ => self.other_token(lock),
        };
        let ttl = self.rng.random_range(TTL_RANGE);
        let r: i64 = self.query(
            redis::cmd("LOCK.RENEW")
                .arg(LOCKS[lock])
                .arg(&token)
                .arg(ttl),
        );
        self.note(format!("LOCK.RENEW {} {token} {ttl} -> {r}", LOCKS[lock]));
        let want = if own.as_ref() == Some(&token) {
            self.set_owner(lock, token, ttl);
            1
        } else {
            0
        };
        assert_eq!(r, want, "LOCK.RENEW reply{}", self.at());
        Settle::Now
    }

    /// python-redis-lock's acquire attempt: `SET lock:<n> <id> NX EX <expire>`.
    fn python_acquire(&mut self, lock: usize) -> Settle {
        let id = self.token("p");
        let ttl = self.rng.random_range(TTL_RANGE);
        let r: Option<String> = self.query(
            redis::cmd("SET")
                .arg(format!("lock:{}", LOCKS[lock]))
                .arg(&id)
                .arg("NX")
                .arg("EX")
                .arg(ttl),
        );
        self.note(format!(
            "SET lock:{} {id} NX EX {ttl} -> {r:?}",
            LOCKS[lock]
        ));
        let want = if self.locks[lock].owner.is_none() {
            self.set_owner(lock, id, ttl);
            Some("OK".to_string())
        } else {
            None
        };
        assert_eq!(r, want, "python acquire{}", self.at());
        Settle::Now
    }

    fn python_release_script(&mut self, lock: usize, id: &str) -> i64 {
        self.query(
            redis::cmd("EVAL")
                .arg(PY_RELEASE)
                .arg(2)
                .arg(format!("lock:{}", LOCKS[lock]))
                .arg(format!("lock-signal:{}", LOCKS[lock]))
                .arg(id),
        )
    }

    /// python-redis-lock's release script, by the owner (module- or python-made lock alike).
    fn python_release(&mut self, lock: usize) -> Settle {
        let id = self.owner_token(lock).unwrap();
        let _: i64 = self.query(redis::cmd("DEL").arg(format!("lock-signal:{}", LOCKS[lock])));
        let r = self.python_release_script(lock, &id);
        self.note(format!(
            "python release {} {id} (owner) -> {r}",
            LOCKS[lock]
        ));
        assert_eq!(r, 0, "python release by the owner{}", self.at());
        // The script signals by itself.
        self.expect_signal.push(lock);
        self.model_free(lock);
        Settle::Deferred
    }

    fn python_release_other(&mut self, lock: usize) -> Settle {
        let id = self.other_token(lock);
        let r = self.python_release_script(lock, &id);
        self.note(format!(
            "python release {} {id} (not owner) -> {r}",
            LOCKS[lock]
        ));
        assert_eq!(r, 1, "python release by a non-owner{}", self.at());
        Settle::Now
    }

    /// A foreign client deletes the lock: `DEL`, `UNLINK`, or an expire time in the past
    /// (Redis deletes the key at once, with a `del` event). Waiters are served; with none,
    /// nothing is signalled (see `forced_expiry`).
    fn foreign_del(&mut self, lock: usize) -> Settle {
        let key = format!("lock:{}", LOCKS[lock]);
        let how = ["DEL", "UNLINK", "PEXPIREAT"][self.rng.random_range(0..3)];
        let mut cmd = redis::cmd(how);
        cmd.arg(&key);
        if how == "PEXPIREAT" {
            cmd.arg(1);
        }
        let r: i64 = self.query(&cmd);
        self.note(format!("{} -> {r}", cmd_text(&cmd)));
        assert_eq!(r, 1, "{} of a held lock{}", cmd_text(&cmd), self.at());
        if !self.model_free(lock) {
            // Freed with nobody queued: python-redis-lock's waiters are signalled.
            self.expect_signal.push(lock);
        }
        Settle::Deferred
    }

    /// `MULTI; DEL lock:<n>; <take it>; EXEC`: the lock is free, but its hand-over to the
    /// first waiter is not done yet when someone asks for it. A LOCK.ACQUIRE must not jump
    /// the queue (the waiter is served first); python-redis-lock's `SET NX` knows nothing of
    /// the queue and takes it, the waiters waiting on.
    fn del_then_acquire_in_multi(&mut self, lock: usize) -> Settle {
        let python = self.rng.random_bool(0.5);
        let token = self.token(if python { "p" } else { "m" });
        let ttl = self.rng.random_range(TTL_RANGE);
        let mut take = if python {
            let mut c = redis::cmd("SET");
            c.arg(format!("lock:{}", LOCKS[lock]))
                .arg(&token)
                .arg("NX")
                .arg("EX")
                .arg(ttl);
            c
        } else {
            acquire(LOCKS[lock], &token, ttl, Some(0))
        };
        let (_, r): (i64, Option<String>) = match redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(format!("lock:{}", LOCKS[lock]))
            .add_command(std::mem::replace(&mut take, redis::cmd("PING")))
            .query(&mut self.c)
        {
            Ok(v) => v,
            Err(e) => panic!("MULTI failed: {e}{}", self.at()),
        };
        self.note(format!(
            "MULTI DEL lock:{n}; {} {n} {token} {ttl} EXEC -> {r:?}",
            if python {
                "SET NX EX"
            } else {
                "LOCK.ACQUIRE BLOCK 0"
            },
            n = LOCKS[lock]
        ));
        let want = if python {
            // Takes the free key; the queue is untouched.
            self.set_owner(lock, token, ttl);
            Some("OK".to_string())
        } else if self.model_free(lock) {
            None
        } else {
            self.set_owner(lock, token, ttl);
            Some("OK".to_string())
        };
        assert_eq!(r, want, "the taker's reply{}", self.at());
        Settle::Now
    }

    /// `PEXPIRE lock:<n> <10..20 ms>`: the lease runs out a moment later. Not `PEXPIRE 1`:
    /// Redis reads the clock twice in PEXPIRE and, when a millisecond ticks in between, deletes
    /// the key at once (a `del` event, as for an expire time in the past) instead of letting
    /// it expire, and the module signals python-redis-lock's waiters only for the latter.
    fn forced_expiry(&mut self, lock: usize) -> Settle {
        let _: i64 = self.query(redis::cmd("DEL").arg(format!("lock-signal:{}", LOCKS[lock])));
        let ms = self.rng.random_range(10..=20u64);
        let r: i64 = self.query(
            redis::cmd("PEXPIRE")
                .arg(format!("lock:{}", LOCKS[lock]))
                .arg(ms),
        );
        self.note(format!("PEXPIRE lock:{} {ms} -> {r}", LOCKS[lock]));
        assert_eq!(r, 1, "PEXPIRE of a held lock{}", self.at());
        if !self.model_free(lock) {
            // Expiry never signals by itself: the module must.
            self.expect_signal.push(lock);
        }
        Settle::Deferred
    }

    fn pick_waiting(&mut self) -> usize {
        let ws = self.waiting_ones();
        ws[self.rng.random_range(0..ws.len())]
    }

    fn waiter_hangs_up(&mut self) -> Settle {
        let w = self.pick_waiting();
        self.waiters[w].conn = None; // closes the socket
        self.waiters[w].outcome = Outcome::Gone;
        self.waiters[w].checked = true;
        self.remove_from_queue(w);
        let (id, token, lock) = (
            self.waiters[w].id,
            self.waiters[w].token.clone(),
            self.waiters[w].lock,
        );
        self.note(format!(
            "waiter {token} on {} (client {id}) hangs up",
            LOCKS[lock]
        ));
        // The server notices the hang-up on its own time.
        self.wait_blocked();
        Settle::Now
    }

    fn client_unblock(&mut self) -> Settle {
        let w = self.pick_waiting();
        let id = self.waiters[w].id;
        let r: i64 = self.query(redis::cmd("CLIENT").arg("UNBLOCK").arg(id));
        let (token, lock) = (self.waiters[w].token.clone(), self.waiters[w].lock);
        self.note(format!(
            "CLIENT UNBLOCK {id} (waiter {token} on {}) -> {r}",
            LOCKS[lock]
        ));
        assert_eq!(r, 1, "CLIENT UNBLOCK of a waiter{}", self.at());
        self.waiters[w].outcome = Outcome::Unblocked;
        self.remove_from_queue(w);
        Settle::Now
    }

    /// CLIENT UNBLOCK of a client that is not blocked (this one, or a served waiter): 0.
    fn client_unblock_not_waiting(&mut self) -> Settle {
        let done: Vec<i64> = self
            .waiters
            .iter()
            .filter(|w| w.outcome != Outcome::Waiting && w.conn.is_some())
            .map(|w| w.id)
            .collect();
        let id = if !done.is_empty() && self.rng.random_bool(0.7) {
            done[self.rng.random_range(0..done.len())]
        } else {
            self.query(redis::cmd("CLIENT").arg("ID"))
        };
        let r: i64 = self.query(redis::cmd("CLIENT").arg("UNBLOCK").arg(id));
        self.note(format!("CLIENT UNBLOCK {id} (not waiting) -> {r}"));
        assert_eq!(r, 0, "CLIENT UNBLOCK of a client not blocked{}", self.at());
        Settle::Now
    }

    /// A waiter with a short BLOCK on a held lock: nil when the time is up, the queue unchanged.
    fn short_block_runs_out(&mut self, lock: usize) -> Settle {
        let token = self.token("t");
        let ms = self.rng.random_range(1..=40u64);
        let mut conn = self.server.conn();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let started = Instant::now();
        let r: Option<String> = acquire(LOCKS[lock], &token, 30, Some(ms))
            .query(&mut conn)
            .unwrap();
        let took = started.elapsed();
        self.note(format!(
            "LOCK.ACQUIRE {} {token} 30 BLOCK {ms} -> {r:?} after {took:?}",
            LOCKS[lock]
        ));
        assert_eq!(r, None, "a BLOCK that runs out replies nil{}", self.at());
        assert!(
            took >= Duration::from_millis(ms),
            "replied before its BLOCK time ({took:?} < {ms} ms){}",
            self.at()
        );
        Settle::Now
    }

    fn resetall(&mut self) -> Settle {
        let r: i64 = self.query(&redis::cmd("LOCK.RESETALL"));
        self.note(format!("LOCK.RESETALL -> {r}"));
        let held = self.locks.iter().filter(|l| l.owner.is_some()).count() as i64;
        assert_eq!(r, held, "LOCK.RESETALL counts the held locks{}", self.at());
        for lock in 0..LOCKS.len() {
            if self.locks[lock].owner.is_some() {
                self.model_free(lock);
            }
        }
        Settle::Deferred
    }

    fn flushdb(&mut self) -> Settle {
        let _: Value = self.query(&redis::cmd("FLUSHDB"));
        self.note("FLUSHDB".to_string());
        for lock in 0..LOCKS.len() {
            if self.locks[lock].owner.is_some() {
                self.model_free(lock);
            }
        }
        Settle::Deferred
    }

    // ---- checks ----

    fn wait_blocked(&mut self) {
        let want = self.queued();
        let start = Instant::now();
        loop {
            let got = info_field(&mut self.c, "clients", "blocked_clients");
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "blocked_clients stayed {got}, the model has {want} waiters{}",
                self.at()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn server_owners(&mut self) -> Vec<Option<String>> {
        (0..LOCKS.len())
            .map(|i| owner(&mut self.c, LOCKS[i]))
            .collect()
    }

    fn model_owners(&self) -> Vec<Option<String>> {
        (0..LOCKS.len()).map(|i| self.owner_token(i)).collect()
    }

    fn check(&mut self, settle: Settle) {
        // Model invariant: a lock with waiters is held (else the model would have served them).
        for (i, l) in self.locks.iter().enumerate() {
            assert!(
                l.queue.is_empty() || l.owner.is_some(),
                "model: {} free with waiters",
                LOCKS[i]
            );
        }
        let want = self.model_owners();
        if settle == Settle::Now {
            let got = self.server_owners();
            assert_eq!(got, want, "LOCK.OWNER of {LOCKS:?}, at once{}", self.at());
        } else {
            let start = Instant::now();
            loop {
                let got = self.server_owners();
                if got == want {
                    break;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "LOCK.OWNER of {LOCKS:?} is {got:?}, the model says {want:?}{}",
                    self.at()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.wait_blocked();
        // Owners do not change afterwards either (nothing deferred is still pending).
        let got = self.server_owners();
        assert_eq!(
            got,
            want,
            "LOCK.OWNER of {LOCKS:?}, once settled{}",
            self.at()
        );
        // No stray lock keys.
        let mut keys: Vec<String> = self.query(redis::cmd("KEYS").arg("lock:*"));
        keys.sort();
        let want_keys: Vec<String> = (0..LOCKS.len())
            .filter(|i| self.locks[*i].owner.is_some())
            .map(|i| format!("lock:{}", LOCKS[i]))
            .collect();
        assert_eq!(keys, want_keys, "KEYS lock:*{}", self.at());
        // Every held lock has a lease of its owner's length, counted from when it was set.
        for i in 0..LOCKS.len() {
            let Some(h) = self.locks[i].owner.clone() else {
                continue;
            };
            let pttl: i64 = self.query(redis::cmd("PTTL").arg(format!("lock:{}", LOCKS[i])));
            let elapsed = h.since.map(|s| s.elapsed().as_millis() as i64).unwrap_or(0);
            assert!(
                pttl > 0 && pttl <= h.ttl_ms && pttl >= h.ttl_ms - elapsed - 1000,
                "PTTL lock:{} is {pttl}, the lease is {} ms set {elapsed} ms ago{}",
                LOCKS[i],
                h.ttl_ms,
                self.at()
            );
        }
        // python-redis-lock's waiters were signalled where the lock became free.
        for lock in std::mem::take(&mut self.expect_signal) {
            let key = format!("lock-signal:{}", LOCKS[lock]);
            let start = Instant::now();
            loop {
                let n: i64 = self.query(redis::cmd("LLEN").arg(&key));
                if n > 0 {
                    let pttl: i64 = self.query(redis::cmd("PTTL").arg(&key));
                    assert!(
                        (1..=1000).contains(&pttl),
                        "{key} must expire within 1000 ms, PTTL {pttl}{}",
                        self.at()
                    );
                    break;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "{key} was never pushed{}",
                    self.at()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.check_replies();
    }

    /// Every waiter the model has answered must have had exactly that answer.
    fn check_replies(&mut self) {
        for w in 0..self.waiters.len() {
            let want = match self.waiters[w].outcome {
                Outcome::Granted => Value::Okay,
                Outcome::Unblocked => Value::Nil,
                Outcome::Waiting | Outcome::Gone => continue,
            };
            if self.waiters[w].checked {
                continue;
            }
            let mut conn = self.waiters[w].conn.take().expect("connection");
            conn.set_read_timeout(Some(DEADLINE)).unwrap();
            let got = conn.recv_response();
            let token = self.waiters[w].token.clone();
            let ok = match (&got, &want) {
                (Ok(Value::Okay), Value::Okay) => true,
                (Ok(Value::SimpleString(s)), Value::Okay) => s == "OK",
                (Ok(Value::Nil), Value::Nil) => true,
                _ => false,
            };
            assert!(
                ok,
                "waiter {token} replied {got:?}, the model says {want:?}{}",
                self.at()
            );
            self.waiters[w].checked = true;
            // Keep the connection open a while (CLIENT UNBLOCK of a served client) and let
            // later steps drop it at random: a served waiter hanging up changes nothing.
            if self.rng.random_bool(0.5) {
                self.waiters[w].conn = Some(conn);
            }
        }
    }

    /// End of a run: release every lock by its owner until all queues are empty; every
    /// waiter is served in arrival order.
    fn drain(&mut self) {
        self.note("drain".to_string());
        for lock in 0..LOCKS.len() {
            while let Some(token) = self.owner_token(lock) {
                self.step += 1;
                let r = release(&mut self.c, LOCKS[lock], &token);
                self.note(format!(
                    "drain: LOCK.RELEASE {} {token} -> {r}",
                    LOCKS[lock]
                ));
                assert_eq!(r, 1, "drain release{}", self.at());
                if !self.model_free(lock) {
                    self.expect_signal.push(lock);
                }
                self.check(Settle::Now);
            }
        }
        assert_eq!(self.queued(), 0);
        for w in &self.waiters {
            assert!(
                w.checked,
                "waiter {} ({:?}) was never answered{}",
                w.token,
                w.outcome,
                self.at()
            );
        }
        assert_eq!(info_field(&mut self.c, "clients", "blocked_clients"), 0);
    }
}

const PY_RELEASE: &str = r#"if redis.call("get", KEYS[1]) ~= ARGV[1] then return 1 else redis.call("del", KEYS[2]); redis.call("lpush", KEYS[2], 1); redis.call("pexpire", KEYS[2], 1000); redis.call("del", KEYS[1]); return 0 end"#;

fn cmd_text(cmd: &redis::Cmd) -> String {
    String::from_utf8_lossy(&cmd.get_packed_command())
        .split("\r\n")
        .enumerate()
        .filter(|(i, s)| *i > 0 && i % 2 == 0 && !s.is_empty())
        .map(|(_, s)| s.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn run_seed(seed: u64, steps: usize) -> (usize, usize) {
    let mut run = Run::new(seed);
    for step in 1..=steps {
        run.step = step;
        run.one_step();
    }
    run.step = steps;
    run.drain();
    let granted = run
        .waiters
        .iter()
        .filter(|w| w.outcome == Outcome::Granted)
        .count();
    (run.waiters.len(), granted)
}

#[test]
fn random_operations_match_the_model() {
    let steps = env_u64("RLOCK_MODEL_STEPS").unwrap_or(150) as usize;
    let seeds: Vec<u64> = match env_u64("RLOCK_MODEL_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("RLOCK_MODEL_SEEDS").unwrap_or(20)).collect(),
    };
    let started = Instant::now();
    let (mut waiters, mut granted) = (0, 0);
    for seed in &seeds {
        let (w, g) = run_seed(*seed, steps);
        waiters += w;
        granted += g;
    }
    eprintln!(
        "{} seeds x {steps} steps: {waiters} blocked waiters, {granted} handed the lock, in {:?}",
        seeds.len(),
        started.elapsed()
    );
}
