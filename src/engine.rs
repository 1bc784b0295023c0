//! Every decision about a lock, in Redis terms: one function per thing that can happen to one.
//! Built on `core` (who waits, in which order, until when, and when to look at a lock again)
//! and `keys` (how the lock's keys are written and replicated). Commands call in here after
//! parsing; `events` calls in when the server reports something.
//!
//! The rules that keep the server safe, whatever the input:
//! - Every sum of times saturates (`core::later`), and the module timer is never armed further
//!   ahead than `core::TIMER_HORIZON_MS`: Redis computes a timer's moment in signed
//!   microseconds, and a longer period would wrap around. It fires, finds nothing due, and is
//!   armed again.
//! - Nothing is written on a replica, while loading, or while writes are paused (`CLIENT
//!   PAUSE`, `FAILOVER`): then due looks wait, polled every `PAUSE_POLL_MS`, and are performed
//!   in arrival order once writes resume.
//! - Nothing is written inside a keyspace notification: it would reach replicas and the AOF
//!   before the command that caused it. Events only schedule a look; a post-notification job
//!   performs it right after that command (Redis 7.2+, Valkey), or the timer (Redis 7.0).
//! - Every LOCK.ACQUIRE gets exactly one reply: a waiter is handed the lock, or times out, or is
//!   unblocked, decided here in one place; the server never ends a wait by itself.
//!
//! Locking rule: the state's mutex is never held across a Redis API call that can call back into
//! this module (opening a key can expire it, which fires a keyspace event).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};

use crate::config::{self, PythonSignal};
use crate::core::{later, timer_period, Check, Core, Grant, LockId, Removed};
use crate::fence;
use crate::keys;
use crate::python::PythonWaiters;
use crate::redis::{self, CmdError, CmdResult, Ctx, Handle, Info, Key, Kind, Reply, Unblocked};
use crate::stats::{self, Counter};

/// How often due looks are retried while writes are paused.
const PAUSE_POLL_MS: i64 = 10;

/// How long a lock is kept free for the python-redis-lock waiter whose turn it is: time for it
/// to be woken and to send its `SET NX`. If it does not come, the next in line is served.
pub const PYTHON_TURN_MS: i64 = 50;

struct State {
    core: Core<Handle>,
    /// The armed module timer and when it fires.
    timer: Option<(u64, i64)>,
    /// Who may be waiting the python-redis-lock way.
    python: PythonWaiters,
    /// Locks kept free for a python-redis-lock waiter whose turn it is: name → (database,
    /// until when). Module clients wait meanwhile.
    python_turns: HashMap<Vec<u8>, (i32, i64)>,
    /// Waiters whose token the server made (`*`): they are answered with it, not `OK`.
    server_made: HashSet<Handle>,
    /// Waiters that asked for `FENCE`.
    fenced: HashSet<Handle>,
    /// The fences handed to granted waiters, until their reply goes out.
    fence_of: HashMap<Handle, i64>,
    /// By name: the database, token and fence of the current acquisition of a held lock given
    /// a fence: a retry by that token while it holds the lock throughout is given the same
    /// fence. Forgotten as soon as the lock is let go, or may have been (an event on
    /// `lock:<name>` other than a new expiry, an overwrite by `SET`, `SETEX`, `PSETEX`,
    /// `GETSET` or `MSET`, a flush, swap, load or role change), in any database: then the
    /// holder's next `FENCE` is a new fence.
    fence_holders: HashMap<Box<[u8]>, FenceHolder>,
    /// Waiters that asked for `BIND`, and their clients: bound when handed the lock.
    bind_on_grant: HashMap<Handle, u64>,
    /// Bound locks: the client they are bound to, and the token they were bound with. A
    /// binding ends with its lock, whatever ends it (`end_binding`).
    bound: HashMap<LockId, (u64, Box<[u8]>)>,
    /// The locks bound to each client: exactly `bound`'s keys bound to it (O(1) both ways).
    bound_by_client: HashMap<u64, HashSet<LockId>>,
}

impl State {
    /// `lock` is no longer bound (if it was): out of both maps.
    fn unbind(&mut self, lock: &LockId) -> Option<(u64, Box<[u8]>)> {
        let (client, token) = self.bound.remove(lock)?;
        if let Some(locks) = self.bound_by_client.get_mut(&client) {
            locks.remove(lock);
            if locks.is_empty() {
                self.bound_by_client.remove(&client);
            }
        }
        Some((client, token))
    }
}

/// Who was given a lock's last fence, for the current acquisition (`State::fence_holders`).
struct FenceHolder {
    db: i32,
    token: Box<[u8]>,
    fence: i64,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State {
        core: Core::new(),
        timer: None,
        python: PythonWaiters::new(),
        python_turns: HashMap::new(),
        server_made: HashSet::new(),
        fenced: HashSet::new(),
        fence_of: HashMap::new(),
        fence_holders: HashMap::new(),
        bind_on_grant: HashMap::new(),
        bound: HashMap::new(),
        bound_by_client: HashMap::new(),
    })
});

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut state = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut state)
}

/// Drop every waiter, look and timer record, and their memory (the module is being unloaded:
/// the server has made sure no client is blocked and no timer armed).
pub fn forget_everything() {
    with(|s| {
        s.core = Core::new();
        s.timer = None;
        s.python = PythonWaiters::new();
        s.python_turns = HashMap::new();
        s.server_made = HashSet::new();
        s.fenced = HashSet::new();
        s.fence_of = HashMap::new();
        s.fence_holders = HashMap::new();
        s.bind_on_grant = HashMap::new();
        s.bound = HashMap::new();
        s.bound_by_client = HashMap::new();
    });
}

/// The module was loaded: python-redis-lock clients may already be blocked, on names it
/// cannot know; they count as waiting on every lock until they are unblocked.
pub fn loaded(ctx: Ctx) {
    let blocked = redis::clients_blocked_in(ctx, &["blpop", "brpop"]).unwrap_or_default();
    if !blocked.is_empty() {
        ctx.log_notice(&format!(
            "rlock: {} client(s) already blocked in BLPOP/BRPOP: every freed lock is signalled \
             for python-redis-lock until they are unblocked",
            blocked.len()
        ));
    }
    with(|s| s.python.blocked_at_load(blocked));
}

/// `INFO rlock`: what waits now, the counters since load, and the configuration.
pub fn info(info: &mut Info) {
    let (waiters, locks, python_waits, python_turns) = with(|s| {
        (
            s.core.waiting(),
            s.core.locks_waited_for(),
            s.python.len(),
            s.python_turns.len(),
        )
    });
    let n = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
    info.int("waiters", n(waiters));
    info.int("locks_with_waiters", n(locks));
    info.int("python_waits_followed", n(python_waits));
    info.int("python_turns_open", n(python_turns));
    let (bound, bound_clients) = with(|s| (s.bound.len(), s.bound_by_client.len()));
    info.int("bound_locks", n(bound));
    info.int("bound_clients", n(bound_clients));
    for (name, count) in stats::all() {
        info.int(name, i64::try_from(count).unwrap_or(i64::MAX));
    }
    let policy = match config::python_signal() {
        PythonSignal::auto => "auto",
        PythonSignal::always => "always",
        PythonSignal::never => "never",
    };
    info.text("python_signal", policy);
}

// ---- connection-bound locks (BIND) ----

/// `token` now holds `name` (in the selected database): bound to `client`, or to no client.
/// Every successful acquire by the holder's token decides anew; a release unbinds.
fn set_binding(ctx: Ctx, name: &[u8], token: &[u8], client: Option<u64>) {
    with(|s| bind(s, LockId::new(ctx.db(), name), token, client));
}

/// `token` now holds `lock`: bound to `client`, or to no client.
fn bind(s: &mut State, lock: LockId, token: &[u8], client: Option<u64>) {
    if client.is_none() && s.bound.is_empty() {
        return;
    }
    s.unbind(&lock);
    if let Some(client) = client {
        s.bound_by_client
            .entry(client)
            .or_default()
            .insert(lock.clone());
        s.bound.insert(lock, (client, token.into()));
    }
}

/// The lock `name` of the selected database ends (let go by the module, deleted, expired,
/// evicted, renamed or moved away): so does its binding.
fn end_binding(ctx: Ctx, name: &[u8]) {
    with(|s| {
        if !s.bound.is_empty() {
            s.unbind(&LockId::new(ctx.db(), name));
        }
    });
}

/// `FLUSHALL`/`FLUSHDB`/`SWAPDB`: the locks of database `db` (None: every database) are gone
/// from it, and their bindings end.
pub fn bindings_end_in(db: Option<i32>) {
    with(|s| {
        if s.bound.is_empty() {
            return;
        }
        let ended: Vec<LockId> = s
            .bound
            .keys()
            .filter(|l| db.is_none_or(|db| l.db == db))
            .cloned()
            .collect();
        for lock in ended {
            s.unbind(&lock);
        }
    });
}

/// The client `client` is gone: every lock still bound to it is taken back (if its token
/// still holds it) and handed to its next waiter, as soon as writes are allowed.
pub fn client_gone(ctx: Ctx, client: u64) {
    let now = Ctx::now_ms();
    let released = with(|s| {
        if s.bound_by_client.is_empty() {
            return 0;
        }
        let Some(locks) = s.bound_by_client.remove(&client) else {
            return 0;
        };
        let mut released = 0;
        for lock in locks {
            if let Some((_, token)) = s.bound.remove(&lock) {
                s.core.schedule_take_back(&lock, &token, now);
                released += 1;
            }
        }
        released
    });
    if released > 0 {
        stats::add(Counter::BoundReleased, released);
        rearm(ctx);
    }
}

// ---- python-redis-lock clients, seen by the command filter ----

/// Client `client` waits in `BLPOP lock-signal:<name> ...` for `timeout_ms` (None: no limit).
pub fn python_waits(client: u64, name: &[u8], timeout_ms: Option<i64>) {
    let now = Ctx::now_ms();
    let until = timeout_ms.map_or(i64::MAX, |ms| later(now, ms));
    let overflowed = with(|s| {
        // Swept before this wait is noted: its client is not blocked yet (the filter runs
        // before the command), and a sweep would drop it.
        let overflowed = s.python.wants_sweep() && s.python.sweep(now, redis::client_blocked);
        let ticket = s.core.ticket();
        s.python.blpop(name, client, until, now, ticket);
        overflowed
    });
    if overflowed {
        Ctx::log_warning_anywhere(
            "rlock: too many python-redis-lock waits to follow (BLPOP on lock-signal:*): \
             every freed lock is signalled until the clients blocked in BLPOP/BRPOP now are \
             unblocked",
        );
    }
}

/// A client sets `lock:<name>` itself: python-redis-lock's acquire, which, if the lock
/// is taken, goes on to wait in `BLPOP`.
pub fn python_tries(name: &[u8]) {
    let now = Ctx::now_ms();
    with(|s| {
        s.python.set(name, now);
        forget_fence_holder(s, name);
        // If it was its turn, it has come: the lock is its own from here (or someone's).
        if !s.python_turns.is_empty() {
            s.python_turns.remove(name);
        }
    });
}

/// Until when `lock` is kept free for a python-redis-lock waiter (None: it is not).
fn python_turn(s: &mut State, lock: &LockId, now: i64) -> Option<i64> {
    let &(db, until) = s.python_turns.get(&lock.name)?;
    if now >= until {
        s.python_turns.remove(&lock.name);
        return None;
    }
    (db == lock.db).then_some(until)
}

/// A client (python-redis-lock's release or reset script) pushed a signal for `name`: one
/// python waiter is woken by it.
pub fn python_signalled_elsewhere(name: &[u8]) {
    stats::bump(Counter::PythonSignalsObserved);
    python_signalled(name);
}

/// `name` was freed and nobody the module serves takes it: signal it, as python-redis-lock's
/// release would, if a python-redis-lock client may be waiting for it.
fn signal_if_awaited(ctx: Ctx, name: &[u8], now: i64) {
    if python_may_wait(ctx, name, now) {
        keys::signal(ctx, name, now);
        python_signalled(name);
        stats::bump(Counter::PythonSignalsSent);
    } else {
        stats::bump(Counter::PythonSignalsSkipped);
    }
}

/// A signal was left for `name`'s python waiters.
fn python_signalled(name: &[u8]) {
    with(|s| s.python.signalled(name));
}

/// Whether a lock the module frees is signalled for python-redis-lock (`rlock.python-signal`).
/// After an overflow of the watches, the clients blocked in a list pop now stand for them.
fn python_may_wait(ctx: Ctx, name: &[u8], now: i64) -> bool {
    match config::python_signal() {
        PythonSignal::always => true,
        PythonSignal::never => false,
        PythonSignal::auto => {
            if with(|s| s.python.overflowing()) {
                let Some(blocked) = redis::clients_blocked_in(ctx, &["blpop", "brpop"]) else {
                    return true;
                };
                with(|s| s.python.overflow_over(blocked));
            }
            with(|s| s.python.may_wait(name, now, redis::client_blocked))
        }
    }
}

// ---- commands ----

/// A token for `LOCK.ACQUIRE name * ...`: 18 bytes from a CSPRNG in base64 (24 characters), as
/// python-redis-lock makes its ids.
pub fn new_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How a `LOCK.ACQUIRE` asks for the lock.
#[derive(Clone, Copy, Debug)]
pub struct Acquire {
    /// The lease, from the moment the lock is taken.
    pub ttl_ms: i64,
    /// `Some`: wait in line this long at most (`Some(0)`: without limit), where the client may
    /// block.
    pub block_ms: Option<i64>,
    /// The token was made by the server (`*`): reply it instead of `OK`.
    pub reply_token: bool,
    /// `BIND`: the lock is also let go when the acquiring connection goes away.
    pub bind: bool,
    /// `FENCE`: reply a fence, above every fence issued before for the name.
    pub fence: bool,
}

/// `LOCK.ACQUIRE`: take a free lock, renew one `token` holds, or wait in line.
pub fn acquire(ctx: Ctx, name: &[u8], key_name: &[u8], token: &[u8], how: Acquire) -> CmdResult {
    let mut key = keys::open_lock(ctx, key_name, true)?;
    // Read before anything is written: a fence key that is not one changes nothing.
    let mut last_fence = if how.fence {
        Some(read_fence(ctx, name)?)
    } else {
        None
    };
    let now = Ctx::now_ms();
    // Free, but others were in line first (a foreign release whose hand-over is still
    // scheduled): they go first.
    if key.kind() == Kind::Empty && has_waiters(ctx, name) {
        hand_over_or_free(ctx, &mut key, name, key_name, now, false);
        if how.fence {
            // They may have been given fences: the next is above those.
            last_fence = Some(read_fence(ctx, name)?);
        }
    }
    // Kept free for a python-redis-lock waiter: as if held until then.
    let turn = if key.kind() == Kind::Empty {
        with(|s| {
            if s.python_turns.is_empty() {
                None
            } else {
                python_turn(s, &LockId::new(ctx.db(), name), now)
            }
        })
    } else {
        None
    };
    let held_until = if let Some(until) = turn {
        Some(until)
    } else if key.kind() == Kind::Empty || keys::holds(&key, token) {
        if let Some(last) = last_fence {
            // Checked before the lock is written.
            if last == i64::MAX {
                return Err(CmdError("ERR the lock's fence counter is exhausted".into()));
            }
        }
        let at = later(now, how.ttl_ms);
        // Held by `token` already: a retry or renewal of the same acquisition.
        let retry = key.kind() != Kind::Empty;
        if key.kind() == Kind::Empty {
            keys::write_owner(ctx, &mut key, key_name, token, at);
        } else {
            keys::write_expiry(ctx, &mut key, key_name, at);
            lease_changed(ctx, name, at);
        }
        stats::bump(Counter::AcquiredAtOnce);
        set_binding(ctx, name, token, how.bind.then(|| ctx.client_id()));
        let fence = match last_fence {
            Some(last) => Some(issue_fence(ctx, name, token, last, retry)?),
            None => {
                if !retry {
                    with(|s| forget_fence_holder(s, name));
                }
                None
            }
        };
        return Ok(acquired(how.reply_token.then(|| token.to_vec()), fence));
    } else {
        key.expires_at()
    };
    match how.block_ms {
        Some(ms) if ctx.may_block() => {
            let blocked = wait(ctx, name, token, ms, held_until, how);
            Ok(if blocked { Reply::Blocked } else { Reply::Nil })
        }
        _ => Ok(Reply::Nil),
    }
}

/// `LOCK.RELEASE`: if `token` holds the lock, hand it to the first waiter or free it → 1.
pub fn release(ctx: Ctx, name: &[u8], key_name: &[u8], token: &[u8]) -> CmdResult {
    let mut key = keys::open_lock(ctx, key_name, true)?;
    if !keys::holds(&key, token) {
        return Ok(Reply::Int(0));
    }
    set_binding(ctx, name, token, None);
    hand_over_or_free(ctx, &mut key, name, key_name, Ctx::now_ms(), true);
    Ok(Reply::Int(1))
}

/// `LOCK.RENEW`: if `token` holds the lock, its lease ends `ttl_ms` from now → 1.
pub fn renew(ctx: Ctx, name: &[u8], key_name: &[u8], token: &[u8], ttl_ms: i64) -> CmdResult {
    let mut key = keys::open_lock(ctx, key_name, true)?;
    if !keys::holds(&key, token) {
        return Ok(Reply::Int(0));
    }
    let at = later(Ctx::now_ms(), ttl_ms);
    keys::write_expiry(ctx, &mut key, key_name, at);
    lease_changed(ctx, name, at);
    Ok(Reply::Int(1))
}

/// `LOCK.OWNER`: the token in `lock:<name>`, read as `GET` reads it (nothing re-encoded).
pub fn owner(ctx: Ctx, key_name: &[u8]) -> CmdResult {
    Ok(match ctx.get(key_name)? {
        Some(token) => Reply::Bulk(token),
        None => Reply::Nil,
    })
}

/// `LOCK.INFO`: the owner (read as `GET` reads), the lease left, the module waiters queued,
/// whether a python-redis-lock client may be waiting, and the client a `BIND` lock is bound to.
pub fn lock_info(ctx: Ctx, name: &[u8], key_name: &[u8]) -> CmdResult {
    let owner = ctx.get(key_name)?;
    let now = Ctx::now_ms();
    let ttl = match (
        &owner,
        Key::open(ctx, key_name, false).and_then(|k| k.expires_at()),
    ) {
        (None, _) => -2,
        (Some(_), None) => -1,
        (Some(_), Some(at)) => at.saturating_sub(now).max(0),
    };
    let lock = LockId::new(ctx.db(), name);
    let (waiters, bound) = with(|s| {
        let bound = s
            .bound
            .get(&lock)
            .and_then(|(client, token)| (owner.as_deref() == Some(&token[..])).then_some(*client));
        (s.core.queued(&lock), bound)
    });
    let python = python_may_wait(ctx, name, now);
    let int = |n: u64| Reply::Int(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(Reply::Map(vec![
        ("owner", owner.map_or(Reply::Nil, Reply::Bulk)),
        ("ttl", Reply::Int(ttl)),
        ("waiters", int(waiters as u64)),
        ("python", Reply::Int(i64::from(python))),
        ("bound_to", bound.map_or(Reply::Nil, int)),
        (
            "fence",
            match read_fence(ctx, name) {
                Ok(last) if last > 0 => Reply::Int(last),
                _ => Reply::Nil,
            },
        ),
    ]))
}

/// `LOCK.RESETALL`: delete every lock of the selected database, signal python-redis-lock's
/// waiters of each as its `reset_all` does, hand each lock to its first module waiter.
pub fn reset_all(ctx: Ctx) -> CmdResult {
    let now = Ctx::now_ms();
    let mut removed = 0;
    for key_name in ctx.keys_with_prefix(keys::LOCK_PREFIX) {
        let name = &key_name[keys::LOCK_PREFIX.len()..];
        let Some(mut key) = Key::open(ctx, &key_name, true) else {
            continue;
        };
        if keys::delete(ctx, &mut key, &key_name) {
            removed += 1;
        }
        signal_if_awaited(ctx, name, now);
        hand_over_or_free(ctx, &mut key, name, &key_name, now, false);
    }
    Ok(Reply::Int(removed))
}

/// `CLIENT UNBLOCK client [TIMEOUT|ERROR]` (every one becomes `LOCK.UNBLOCK`, decided here,
/// when it runs): a queued waiter leaves its queue, answered nil or the `-UNBLOCKED` error → 1.
/// Any other client is the server's own `CLIENT UNBLOCK`'s (a waiter already handed the lock
/// is not waiting: 0, and it gets `OK`).
pub fn unblock(ctx: Ctx, client: i64, error: bool) -> CmdResult {
    let removed = with(|s| {
        let handle = s.core.waiter_of_client(u64::try_from(client).ok()?)?;
        (s.core.remove(handle) == Removed::Queued).then_some(handle)
    });
    let Some(handle) = removed else {
        // The server aborts when CLIENT UNBLOCK reaches a client that CLIENT PAUSE holds back
        // (valkey-io/valkey#2111; every server tested, with or without the module), and a
        // LOCK.ACQUIRE sent during a pause is one. While paused, blocked clients are refused.
        let target = u64::try_from(client).ok();
        if ctx.writes_paused() && target.is_some_and(redis::client_blocked) {
            return Err(CmdError(
                "ERR CLIENT UNBLOCK of a blocked client is refused while clients are paused: \
                 one held back by the pause would abort the server (CLIENT UNPAUSE first, or \
                 CLIENT KILL)"
                    .into(),
            ));
        }
        return ctx.client_unblock(client, error);
    };
    let how = if error {
        Unblocked::Error
    } else {
        Unblocked::Nil
    };
    stats::bump(Counter::WaitersUnblocked);
    redis::unblock(handle, how);
    rearm(ctx);
    Ok(Reply::Int(1))
}

// ---- blocked clients ----

/// A woken waiter is being answered: `OK` if it was handed the lock, nil if its time ran out
/// or it was unblocked, the `-UNBLOCKED` error for `CLIENT UNBLOCK ... ERROR`.
pub fn answer(ctx: Ctx, handle: Handle, how: Unblocked) -> CmdResult {
    // Answered `OK`: its acquire is the last one, and decides the binding (a group's members
    // are answered in their order in line), if its token still holds the lock (nothing ended
    // it in the same pass: a binding never outlives its lock).
    // Only where it can change something: this waiter asked for BIND, or some lock is bound
    // (the hand-over unbound this one; a waiter without BIND keeps it so). Otherwise no copy and
    // no key read on the hand-over path.
    let granted = if how == Unblocked::Granted {
        with(|s| {
            if !s.bind_on_grant.contains_key(&handle) && s.bound.is_empty() {
                return None;
            }
            let (lock, token) = s.core.granted_to(handle)?;
            Some((lock.clone(), token.to_vec()))
        })
    } else {
        None
    };
    let binding = granted.filter(|(lock, token)| {
        lock.db == ctx.db()
            && Key::open(ctx, &keys::lock_key(&lock.name), false)
                .is_some_and(|key| keys::holds(&key, token))
    });
    let (made, fence) = with(|s| {
        let client = s.bind_on_grant.remove(&handle);
        if let Some((lock, token)) = binding {
            bind(s, lock, &token, client);
        }
        s.fenced.remove(&handle);
        let fence = s.fence_of.remove(&handle);
        let made = s.server_made.remove(&handle) && how == Unblocked::Granted;
        let token = made.then(|| s.core.granted_token(handle)).flatten();
        s.core.delivered(handle);
        (token, fence)
    });
    Ok(match how {
        Unblocked::Granted => acquired(made, fence),
        Unblocked::Nil => Reply::Nil,
        Unblocked::Error => Reply::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()),
        Unblocked::Failed => Reply::Error(
            "ERR the lock's fence counter (lock-fence:<name>) is not a fence hash: not handed the lock"
                .into(),
        ),
        Unblocked::TryAgain => Reply::Error(try_again().0),
    })
}

/// The reply to a successful `LOCK.ACQUIRE`: `OK`; the server-made token; the fence; or both,
/// as `[token, fence]`.
fn acquired(token: Option<Vec<u8>>, fence: Option<i64>) -> Reply {
    match (token, fence) {
        (None, None) => Reply::Ok,
        (Some(token), None) => Reply::Bulk(token),
        (None, Some(fence)) => Reply::Int(fence),
        (Some(token), Some(fence)) => Reply::Array(vec![Reply::Bulk(token), Reply::Int(fence)]),
    }
}

/// `lock-fence:<name>`: the last fence issued (0: none yet, or the counter was lost).
/// In cluster mode, `TRYAGAIN` where this node does not serve the counter (its slot migrates):
/// from a timer or a callback the server's routing may refuse a key that a client's command
/// (with `ASKING`) would reach here.
fn read_fence(ctx: Ctx, name: &[u8]) -> Result<i64, CmdError> {
    if !keys::owns(ctx, &keys::fence_key(name)) {
        return Err(try_again());
    }
    match keys::read_fence(ctx, name)? {
        None => Ok(0),
        Some(f) => fence::parse(&f)
            .ok_or_else(|| CmdError("ERR lock-fence:<name> holds no fence counter".into())),
    }
}

/// The fence for `token`, which now holds `name`: on a `retry` of the acquisition that was
/// given the last fence, that fence again; else a new one, above `last` and not below the
/// clock (`fence::next`). Written (a plain `HSET`) before it is replied.
fn issue_fence(
    ctx: Ctx,
    name: &[u8],
    token: &[u8],
    last: i64,
    retry: bool,
) -> Result<i64, CmdError> {
    let db = ctx.db();
    if retry {
        let same = with(|s| {
            s.fence_holders
                .get(name)
                .is_some_and(|h| h.db == db && *h.token == *token && h.fence == last && last > 0)
        });
        if same {
            return Ok(last);
        }
    }
    let next = fence::next(last, fence::now_us())
        .ok_or_else(|| CmdError("ERR the lock's fence counter is exhausted".into()))?;
    keys::write_fence(ctx, name, next, token)?;
    with(|s| {
        let holder = FenceHolder {
            db,
            token: token.into(),
            fence: next,
        };
        s.fence_holders.insert(name.into(), holder)
    });
    stats::bump(Counter::FencesIssued);
    Ok(next)
}

/// The lock `name` is let go, or may have been: its holder's next `FENCE` gets a new fence.
fn forget_fence_holder(s: &mut State, name: &[u8]) {
    if !s.fence_holders.is_empty() {
        s.fence_holders.remove(name);
    }
}

/// An event on `lock:<name>` other than a new expiry (`del`, `expired`, `evicted`, a rename, a
/// move, a restore, ...), or a command overwriting it: whoever holds it now has not held it
/// throughout.
pub fn lock_replaced(name: &[u8]) {
    with(|s| forget_fence_holder(s, name));
}

/// The server unblocked a waiter without the module: a disconnection, or a demotion to
/// replica (which answers every blocked client with an error itself). A waiter that was
/// already handed the lock but never got the reply gives it back at once, before anything
/// else can see it; while writes are paused, as soon as they resume.
pub fn waiter_left(ctx: Ctx, handle: Handle) {
    stats::bump(Counter::WaitersDisconnected);
    with(|s| {
        s.server_made.remove(&handle);
        s.bind_on_grant.remove(&handle);
        s.fenced.remove(&handle);
        s.fence_of.remove(&handle);
    });
    let Removed::Granted { lock, token } = leave(handle) else {
        return;
    };
    if !ctx.may_write() {
        return; // a replica now: the primary's keys rule
    }
    // The context's client is the waiter, which blocked in the lock's database.
    if !ctx.writes_paused() && ctx.db() == lock.db {
        let key_name = keys::lock_key(&lock.name);
        if let Some(mut key) = Key::open(ctx, &key_name, true) {
            if keys::holds(&key, &token) {
                hand_over_or_free(ctx, &mut key, &lock.name, &key_name, Ctx::now_ms(), true);
            }
        }
        return;
    }
    with(|s| s.core.schedule_take_back(&lock, &token, Ctx::now_ms()));
    rearm(ctx);
}

/// A waiter leaves without the lock. Redis frees a blocked client's handle (and the reply
/// client it keeps for it) only once the module unblocks it, even after a disconnection; a
/// waiter already granted was unblocked then, and must not be twice.
fn leave(handle: Handle) -> Removed {
    let removed = with(|s| s.core.remove(handle));
    if removed == Removed::Queued {
        redis::unblock(handle, Unblocked::Nil);
    }
    removed
}

// ---- what others do to a lock ----

/// `lock:<name>` went away without the module (python-redis-lock's release, DEL, expiry,
/// eviction, ...): its first waiter gets it, or, with nobody waiting, python-redis-lock's
/// waiters are signalled unless that was just done. Looked at from the timer.
pub fn lock_freed(ctx: Ctx, name: &[u8], expired: bool) {
    stats::bump(if expired {
        Counter::ExpiriesObserved
    } else {
        Counter::ForeignDeletesObserved
    });
    end_binding(ctx, name);
    // python-redis-lock's own release has just signalled: nothing left to do. (Reading here
    // is fine; only writes must wait for the timer.)
    if !has_waiters(ctx, name) && keys::signal_pending(ctx, name) {
        return;
    }
    let lock = LockId::new(ctx.db(), name);
    with(|s| s.core.schedule(&lock, Ctx::now_ms(), true));
    look_soon(ctx);
}

/// `lock:<name>` changed without the module (a new lease, a renewal): that matters only to a
/// lock with waiters, whose lease end is looked at again.
pub fn lock_changed(ctx: Ctx, name: &[u8]) {
    let lock = LockId::new(ctx.db(), name);
    let scheduled = with(|s| {
        let waited_for = s.core.waiting() > 0 && s.core.has_waiters(&lock);
        if waited_for {
            s.core.schedule(&lock, Ctx::now_ms(), false);
        }
        waited_for
    });
    if scheduled {
        rearm(ctx);
    }
}

/// A flush, swap, reload or role change: look at every waited-for lock of `db` (None: all).
pub fn databases_changed(ctx: Ctx, db: Option<i32>) {
    with(|s| {
        s.core.schedule_all(db, Ctx::now_ms());
        s.fence_holders
            .retain(|_, holder| db.is_some_and(|db| holder.db != db));
    });
    rearm(ctx);
}

/// The module timer fired: answer the waiters whose time is up and, unless writes are
/// paused, perform every due look.
pub fn timer_fired(ctx: Ctx) {
    with(|s| s.timer = None);
    perform_due(ctx);
    rearm(ctx);
}

/// When a post-notification job was queued (`look_soon`; 0: none is): one per command is
/// enough.
static JOB_QUEUED_AT: AtomicI64 = AtomicI64::new(0);

/// A queued job runs before the next command; one queued longer ago than this was lost (it
/// never should be), and the timer takes over.
const JOB_LOST_MS: i64 = 1_000;

/// A look was scheduled for now from a keyspace event: perform it right after the command
/// that freed the lock, where the server can (so that no other client's command comes in
/// between: a python-redis-lock client retrying its `SET NX` would otherwise take a freed lock
/// from the module's waiters), else from the timer.
fn look_soon(ctx: Ctx) {
    let now = Ctx::now_ms();
    let queued = JOB_QUEUED_AT.load(Ordering::Relaxed);
    if queued != 0 && now.saturating_sub(queued) < JOB_LOST_MS {
        return;
    }
    if ctx.after_notification(job_ran) {
        JOB_QUEUED_AT.store(now.max(1), Ordering::Relaxed);
    } else {
        JOB_QUEUED_AT.store(0, Ordering::Relaxed);
        rearm(ctx);
    }
}

fn job_ran(ctx: Ctx) {
    JOB_QUEUED_AT.store(0, Ordering::Relaxed);
    perform_due(ctx);
    rearm(ctx);
}

/// Answer the waiters whose time is up and, unless writes are paused, perform every due look.
fn perform_due(ctx: Ctx) {
    let now = Ctx::now_ms();
    let primary = ctx.may_write();
    let paused = primary && ctx.writes_paused();
    let (timed_out, due) = with(|s| {
        let due = if paused {
            if s.core.next_check().is_some_and(|at| at <= now) {
                stats::bump(Counter::DeferredWhilePaused);
            }
            Vec::new()
        } else {
            s.core.take_due(now)
        };
        (s.core.take_timed_out(now), due)
    });
    stats::add(Counter::BlockTimeouts, timed_out.len() as u64);
    for handle in timed_out {
        redis::unblock(handle, Unblocked::Nil);
    }
    if primary && !paused {
        for check in due {
            look_at(ctx, check, now);
        }
    }
}

/// One due look at a lock: hand a free lock to its first waiter (or signal python-redis-lock's
/// waiters), take back a grant that never reached its client, or follow the holder's lease.
fn look_at(ctx: Ctx, check: Check, now: i64) {
    // In the lock's database, and back to the context's own after (it may be a real client's).
    let db = check.lock.db;
    ctx.in_db(db, |ctx| look_at_here(ctx, check, now));
}

fn look_at_here(ctx: Ctx, check: Check, now: i64) {
    let name = &check.lock.name;
    let key_name = keys::lock_key(name);
    let Some(mut key) = Key::open(ctx, &key_name, true) else {
        return;
    };
    match key.kind() {
        Kind::Empty if !ctx.serves_here(&key_name) => {
            // Cluster mode: the lock has left with its slot (`MIGRATE` deleted it here), or
            // this node no longer serves it. Writing it here would make a second holder.
            drop(key);
            redirect_waiters(ctx, name);
        }
        Kind::Empty => {
            // Not again if someone (python-redis-lock's own release) has just signalled.
            let signal = check.signal_if_free
                && python_may_wait(ctx, name, now)
                && !keys::signal_pending(ctx, name);
            hand_over_or_free(ctx, &mut key, name, &key_name, now, signal)
        }
        Kind::String => {
            if check
                .take_back
                .as_deref()
                .is_some_and(|t| keys::holds(&key, t))
            {
                hand_over_or_free(ctx, &mut key, name, &key_name, now, true);
            } else {
                if let Some(at) = key.expires_at() {
                    lease_changed(ctx, name, at);
                }
                recheck_in_cluster(ctx, &check.lock, now);
            }
        }
        Kind::Other => {}
    }
}

/// In cluster mode, how often a lock with waiters is looked at even if nothing is heard of it:
/// a node that loses a slot to a higher epoch deletes its keys without an event, and the
/// waiters of a lock gone that way must be answered (see `redirect_waiters`), as the server
/// itself redirects clients blocked in `BLPOP` on a slot it no longer serves.
const CLUSTER_RECHECK_MS: i64 = 1000;

/// In cluster mode: look at `lock` again soon while it has waiters (`CLUSTER_RECHECK_MS`).
fn recheck_in_cluster(ctx: Ctx, lock: &LockId, now: i64) {
    if ctx.in_cluster() {
        with(|s| {
            if s.core.has_waiters(lock) {
                s.core.schedule(lock, later(now, CLUSTER_RECHECK_MS), false);
            }
        });
    }
}

/// Answer every waiter of `name` (selected database) `-TRYAGAIN`: the lock now lives on
/// another cluster node, where the server's routing sends their retries.
fn redirect_waiters(ctx: Ctx, name: &[u8]) {
    let lock = LockId::new(ctx.db(), name);
    let handles = with(|s| s.core.take_all(&lock));
    stats::add(Counter::WaitersRedirected, handles.len() as u64);
    for handle in handles {
        redis::unblock(handle, Unblocked::TryAgain);
    }
}

/// The error for a request this node cannot serve while the lock's slot migrates.
fn try_again() -> CmdError {
    CmdError("TRYAGAIN the lock's slot is being migrated; try again".into())
}

// ---- the shared steps ----

/// Whether module clients are queued for `name` in the selected database.
fn has_waiters(ctx: Ctx, name: &[u8]) -> bool {
    with(|s| s.core.waiting() > 0 && s.core.has_waiters(&LockId::new(ctx.db(), name)))
}

/// Block the calling client in `name`'s queue. `expires_at` is the holder's lease end, when
/// the lock must be looked at again. False if Redis refused to block the client.
fn wait(
    ctx: Ctx,
    name: &[u8],
    token: &[u8],
    block_ms: i64,
    expires_at: Option<i64>,
    how: Acquire,
) -> bool {
    let Some(handle) = ctx.block() else {
        return false;
    };
    let lock = LockId::new(ctx.db(), name);
    // The clock has whole milliseconds: one more makes sure at least `block_ms` have passed.
    let deadline = (block_ms > 0).then(|| later(Ctx::now_ms(), later(block_ms, 1)));
    let client = ctx.client_id();
    with(|s| {
        s.core
            .enqueue(&lock, handle, client, token, how.ttl_ms, deadline);
        if let Some(at) = expires_at {
            s.core.schedule(&lock, later(at, 1), false);
        }
        if ctx.in_cluster() {
            s.core
                .schedule(&lock, later(Ctx::now_ms(), CLUSTER_RECHECK_MS), false);
        }
        if how.reply_token {
            s.server_made.insert(handle);
        }
        if how.bind {
            s.bind_on_grant.insert(handle, client);
        }
        if how.fence {
            s.fenced.insert(handle);
        }
    });
    rearm(ctx);
    true
}

/// The lease of held lock `name` now ends at `expires_at`: look again then if anyone waits.
fn lease_changed(ctx: Ctx, name: &[u8], expires_at: i64) {
    if with(|s| s.core.waiting() == 0) {
        return;
    }
    let lock = LockId::new(ctx.db(), name);
    with(|s| {
        if s.core.has_waiters(&lock) {
            s.core.schedule(&lock, later(expires_at, 1), false);
        }
    });
    rearm(ctx);
}

/// The lock `name` (open as `key`, named `key_name`) is being let go: hand it straight to the
/// first waiter (and every later waiter with the same token), with no moment in between at
/// which another client could take it; with no waiter, delete it and, if `signal`, wake
/// python-redis-lock's waiters.
fn hand_over_or_free(
    ctx: Ctx,
    key: &mut Key,
    name: &[u8],
    key_name: &[u8],
    now: i64,
    signal: bool,
) {
    with(|s| forget_fence_holder(s, name));
    end_binding(ctx, name);
    // One pass per group of waiters that cannot be given what they asked for (a fence): a
    // loop, not a recursion, as clients choose how many such waiters there are.
    while !let_go_once(ctx, key, name, key_name, now, signal) {}
}

/// One pass of `hand_over_or_free`: false when the first waiters were refused (answered with
/// an error, out of the queue) and the next must be looked at.
fn let_go_once(
    ctx: Ctx,
    key: &mut Key,
    name: &[u8],
    key_name: &[u8],
    now: i64,
    signal: bool,
) -> bool {
    let (timed_out, next) = with(|s| {
        if s.core.waiting() == 0 {
            return (Vec::new(), Next::Free);
        }
        let lock = LockId::new(ctx.db(), name);
        // A waiter whose time is up is answered nil, not handed the lock.
        let timed_out = s.core.take_timed_out(now);
        if !s.python_turns.is_empty() {
            if let Some(until) = python_turn(s, &lock, now) {
                return (timed_out, Next::PythonsTurn(lock, until, false));
            }
        }
        // A python-redis-lock waiter that blocked before the first module waiter goes first.
        if !s.python.is_empty() && config::python_signal() != PythonSignal::never {
            let python = s.python.first_in_line(name, now, redis::client_blocked);
            if let (Some(ticket), Some(first)) = (python, s.core.first_ticket(&lock)) {
                if ticket < first {
                    s.python.take_turn(name, ticket);
                    let until = later(now, PYTHON_TURN_MS);
                    if s.python_turns.len() >= 1024 {
                        // Turns of locks nobody looked at again since: over.
                        s.python_turns.retain(|_, (_, end)| now < *end);
                    }
                    s.python_turns.insert(name.to_vec(), (lock.db, until));
                    return (timed_out, Next::PythonsTurn(lock, until, true));
                }
            }
        }
        (
            timed_out,
            s.core.pop_next(&lock).map_or(Next::Free, Next::Grant),
        )
    });
    stats::add(Counter::BlockTimeouts, timed_out.len() as u64);
    for handle in timed_out {
        redis::unblock(handle, Unblocked::Nil);
    }
    match next {
        Next::Grant(grant) => {
            let wants_fence = with(|s| {
                !s.fenced.is_empty()
                    && std::iter::once(&grant.handle)
                        .chain(&grant.also)
                        .any(|h| s.fenced.contains(h))
            });
            let last_fence = if wants_fence {
                match read_fence(ctx, name) {
                    Ok(last) if last < i64::MAX => Some(last),
                    other => {
                        // No fence to give: these waiters are not handed the lock; the next are.
                        let how = match other {
                            Err(e) if e.0.starts_with("TRYAGAIN") => Unblocked::TryAgain,
                            _ => Unblocked::Failed,
                        };
                        for h in std::iter::once(grant.handle).chain(grant.also) {
                            with(|s| {
                                s.core.delivered(h);
                            });
                            redis::unblock(h, how);
                        }
                        return false;
                    }
                }
            } else {
                None
            };
            stats::bump(Counter::HandOvers);
            stats::add(Counter::AcquiredAfterWaiting, 1 + grant.also.len() as u64);
            let at = later(now, grant.ttl_ms);
            keys::write_owner(ctx, key, key_name, &grant.token, at);
            if let Some(last) = last_fence {
                // A new acquisition: a new fence, whoever held the lock before.
                if let Ok(fence) = issue_fence(ctx, name, &grant.token, last, false) {
                    with(|s| {
                        for h in std::iter::once(&grant.handle).chain(&grant.also) {
                            if s.fenced.contains(h) {
                                s.fence_of.insert(*h, fence);
                            }
                        }
                    });
                }
            }
            // Unbound until answered: the binding follows the last acquire *answered* (see
            // `answer`), so a waiter that vanishes before its reply binds nothing.
            set_binding(ctx, name, &grant.token, None);
            redis::unblock(grant.handle, Unblocked::Granted);
            for handle in grant.also {
                redis::unblock(handle, Unblocked::Granted);
            }
            lease_changed(ctx, name, at);
        }
        Next::Free => {
            keys::delete(ctx, key, key_name);
            if signal {
                signal_if_awaited(ctx, name, now);
            }
        }
        Next::PythonsTurn(lock, until, wake) => {
            // Free for the python-redis-lock waiter whose turn it is; the module's waiters are
            // looked at again when the turn ends (if it has not taken the lock by then).
            keys::delete(ctx, key, key_name);
            if wake {
                stats::bump(Counter::PythonTurns);
                keys::signal(ctx, name, now);
            }
            with(|s| s.core.schedule(&lock, until, false));
            rearm(ctx);
        }
    }
    true
}

/// What becomes of a lock being let go.
enum Next {
    /// Handed to the first module waiter.
    Grant(Grant<Handle>),
    /// Deleted: nobody the module serves waits for it.
    Free,
    /// Kept free until then for a python-redis-lock waiter (woken now if `true`).
    PythonsTurn(LockId, i64, bool),
}

/// Arm the module timer for the earliest due look or deadline, unless it already fires by
/// then; stop it when nothing is due (so `MODULE UNLOAD` is possible).
fn rearm(ctx: Ctx) {
    let now = Ctx::now_ms();
    let paused = ctx.writes_paused();
    let (stop, arm) = with(|s| {
        let check = s.core.next_check().map(|at| {
            if paused {
                at.max(later(now, PAUSE_POLL_MS))
            } else {
                at
            }
        });
        let next = check.into_iter().chain(s.core.next_deadline()).min();
        match (next, s.timer) {
            (Some(at), Some((id, armed))) if at < armed => (Some(id), Some(at)),
            (Some(at), None) => (None, Some(at)),
            (None, Some((id, _))) => {
                s.timer = None;
                (Some(id), None)
            }
            _ => (None, None),
        }
    });
    if let Some(id) = stop {
        ctx.stop_timer(id);
    }
    if let Some(at) = arm {
        let period = timer_period(now, at);
        let id = ctx.create_timer(period);
        with(|s| s.timer = Some((id, later(now, period))));
    }
}
