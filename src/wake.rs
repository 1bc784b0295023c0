//! The glue between Redis's asynchronous world and the core: blocked clients, their replies,
//! timeouts and disconnections; keyspace and server events; the one module timer through which
//! every deferred look at a lock runs.
//!
//! Why a timer: a write made inside a keyspace-notification callback would reach replicas and
//! the AOF before the command that caused it (see PLATFORM-NOTES), and Redis 7.0 has no
//! post-notification jobs. So events only *schedule* a look at a lock (`Core::schedule`), and the
//! timer callback, a context of its own, performs it: hand the lock to the first waiter, or
//! signal python-redis-lock's waiters, or arm the next look at the holder's lease end.
//!
//! Two rules keep the server safe whatever the times involved: every sum of times saturates
//! (`core::later`), and the timer is never armed further ahead than a horizon (Redis
//! computes a timer's moment in signed microseconds: a longer period would wrap around); it
//! fires, finds nothing due, and is armed again (`core::timer_period`). And while writes are paused (`CLIENT PAUSE`,
//! `FAILOVER`), nothing is written: due looks wait, polled every `PAUSE_POLL_MS`, and are
//! performed in order once the pause is over.
//!
//! Locking rule: the state's mutex is never held across a Redis API call that can call back into
//! this module (opening a key can expire it, which fires a keyspace event).

use std::sync::{LazyLock, Mutex};

use crate::core::{later, timer_period, Check, Core, LockId, Removed};
use crate::ffi::{self, CmdResult, Ctx, Handle, Key, Kind, Reply, Unblocked};
use crate::keys;

/// How often due looks are retried while writes are paused.
const PAUSE_POLL_MS: i64 = 10;

struct State {
    core: Core<Handle>,
    /// The armed module timer and when it fires.
    timer: Option<(u64, i64)>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State {
        core: Core::new(),
        timer: None,
    })
});

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut state = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut state)
}

/// Whether module clients are queued for `name` in the selected database.
pub fn has_waiters(ctx: Ctx, name: &[u8]) -> bool {
    with(|s| s.core.waiting() > 0 && s.core.has_waiters(&LockId::new(ctx.db(), name)))
}

/// Block the calling client in `name`'s queue. `expires_at` is the holder's lease end, when
/// the lock must be looked at again. False if Redis refused to block the client.
pub fn wait(
    ctx: Ctx,
    name: &[u8],
    token: &[u8],
    ttl_ms: i64,
    block_ms: i64,
    expires_at: Option<i64>,
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
            .enqueue(&lock, handle, client, token, ttl_ms, deadline);
        if let Some(at) = expires_at {
            s.core.schedule(&lock, later(at, 1), false);
        }
    });
    rearm(ctx);
    true
}

/// The lease of held lock `name` now ends at `expires_at`: look again then if anyone waits.
pub fn lease_changed(ctx: Ctx, name: &[u8], expires_at: i64) {
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

/// The lock `name` (open as `key`) is being let go: hand it straight to the first waiter,
/// with no moment in between at which another client could take it; with no waiter, delete
/// it and, if `signal`, wake python-redis-lock's waiters.
pub fn hand_over_or_free(ctx: Ctx, key: &mut Key, name: &[u8], now: i64, signal: bool) {
    let (timed_out, grant) = with(|s| {
        if s.core.waiting() == 0 {
            return (Vec::new(), None);
        }
        // A waiter whose time is up is answered nil, not handed the lock.
        let timed_out = s.core.take_timed_out(now);
        (timed_out, s.core.pop_next(&LockId::new(ctx.db(), name)))
    });
    for handle in timed_out {
        ffi::unblock(handle, Unblocked::Nil);
    }
    let key_name = keys::lock_key(name);
    match grant {
        Some(grant) => {
            let at = later(now, grant.ttl_ms);
            keys::write_owner(ctx, key, &key_name, &grant.token, at);
            ffi::unblock(grant.handle, Unblocked::Granted);
            for handle in grant.also {
                ffi::unblock(handle, Unblocked::Granted);
            }
            lease_changed(ctx, name, at);
        }
        None => {
            keys::delete(ctx, key, &key_name);
            if signal {
                keys::signal(ctx, name, now);
            }
        }
    }
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
        with(|s| s.timer = Some((id, now + period)));
    }
}

// ---- callbacks (called from ffi.rs) ----

/// A blocked client is being answered: `OK` if it was handed the lock, nil if its time ran
/// out or `CLIENT UNBLOCK` ended the wait, the `-UNBLOCKED` error for `CLIENT UNBLOCK ... ERROR`.
pub fn on_reply(ctx: Ctx) -> CmdResult {
    let handle = ctx.blocked_handle();
    with(|s| s.core.delivered(handle));
    Ok(match ctx.blocked_outcome() {
        Unblocked::Granted => Reply::Ok,
        Unblocked::Nil => Reply::Nil,
        Unblocked::Error => Reply::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()),
    })
}

/// Whether the client with server id `client` waits in a LOCK.ACQUIRE queue.
pub fn is_waiting(client: u64) -> bool {
    with(|s| s.core.waiter_of_client(client).is_some())
}

/// `CLIENT UNBLOCK client [TIMEOUT|ERROR]` for a queued waiter: it leaves the queue, answered
/// nil or the `-UNBLOCKED` error. False if `client` is not waiting (a waiter already handed
/// the lock is answered `OK`, not unblocked).
pub fn unblock_waiter(ctx: Ctx, client: u64, error: bool) -> bool {
    let removed = with(|s| {
        let handle = s.core.waiter_of_client(client)?;
        (s.core.remove(handle) == Removed::Queued).then_some(handle)
    });
    let Some(handle) = removed else {
        return false;
    };
    ffi::unblock(
        handle,
        if error {
            Unblocked::Error
        } else {
            Unblocked::Nil
        },
    );
    rearm(ctx);
    true
}

/// Redis unblocked a waiter without the module: a disconnection, or a demotion to replica
/// (which answers every blocked client with an error itself). A waiter that was already
/// handed the lock but never got the reply gives it back at once, before anything else can
/// see it; while writes are paused, as soon as they resume.
pub fn on_disconnect(ctx: Ctx, handle: Handle) {
    let Removed::Granted { lock, token } = leave(handle) else {
        return;
    };
    if !ctx.may_write() {
        return; // a replica now: the primary's keys rule
    }
    // The context's client is the waiter, which blocked in the lock's database.
    if !ctx.writes_paused() && ctx.db() == lock.db {
        if let Some(mut key) = Key::open(ctx, &keys::lock_key(&lock.name), true) {
            if key.kind() == Kind::String && keys::holds(&key, &token) {
                hand_over_or_free(ctx, &mut key, &lock.name, Ctx::now_ms(), true);
            }
        }
        return;
    }
    with(|s| s.core.schedule_take_back(&lock, &token, Ctx::now_ms()));
    rearm(ctx);
}

/// A waiter leaves without the lock. Redis frees a blocked client's handle (and the reply
/// client it keeps for it) only once the module unblocks it, even after a timeout or a
/// disconnection; a waiter already granted was unblocked then, and must not be twice.
fn leave(handle: Handle) -> Removed {
    let removed = with(|s| s.core.remove(handle));
    if removed == Removed::Queued {
        ffi::unblock(handle, Unblocked::Nil);
    }
    removed
}

/// A keyspace event on any key. An event that frees `lock:<name>` (python-redis-lock's release,
/// DEL, expiry, eviction, ...) schedules a look at the lock: its first waiter gets it, or,
/// with nobody waiting, python-redis-lock's waiters are signalled unless that was just done.
/// Other events on it (a new lease, a renewal) matter only to a lock with waiters.
pub fn on_key_event(ctx: Ctx, key: &[u8], event: &[u8]) {
    let Some(name) = key.strip_prefix(keys::LOCK_PREFIX) else {
        return;
    };
    let frees = matches!(
        event,
        b"del" | b"expired" | b"evicted" | b"rename_from" | b"move_from"
    );
    // python-redis-lock's own release has just signalled: nothing left to do. (Reading here is
    // fine; only writes must wait for the timer.)
    if frees && !has_waiters(ctx, name) && keys::signal_pending(ctx, name) {
        return;
    }
    let now = Ctx::now_ms();
    let scheduled = with(|s| {
        if !frees && s.core.waiting() == 0 {
            return false;
        }
        let lock = LockId::new(ctx.db(), name);
        if !frees && !s.core.has_waiters(&lock) {
            return false;
        }
        s.core.schedule(&lock, now, frees);
        true
    });
    if scheduled {
        rearm(ctx);
    }
}

/// A flush, swap, reload or role change: look at every waited-for lock of `db` (None: all).
pub fn on_databases_changed(ctx: Ctx, db: Option<i32>) {
    with(|s| s.core.schedule_all(db, Ctx::now_ms()));
    rearm(ctx);
}

/// The module timer fired: answer the waiters whose time is up and, unless writes are paused,
/// perform every due look.
pub fn on_timer(ctx: Ctx) {
    let now = Ctx::now_ms();
    let primary = ctx.may_write();
    let paused = primary && ctx.writes_paused();
    let (timed_out, due) = with(|s| {
        s.timer = None;
        let due = if paused {
            Vec::new()
        } else {
            s.core.take_due(now)
        };
        (s.core.take_timed_out(now), due)
    });
    for handle in timed_out {
        ffi::unblock(handle, Unblocked::Nil);
    }
    if primary && !paused {
        for check in due {
            look_at(ctx, check, now);
        }
    }
    rearm(ctx);
}

/// One due look at a lock: hand a free lock to its first waiter (or signal python-redis-lock's
/// waiters), take back a grant that never reached its client, or follow the holder's lease.
fn look_at(ctx: Ctx, check: Check, now: i64) {
    if !ctx.select_db(check.lock.db) {
        return;
    }
    let name = &check.lock.name;
    let Some(mut key) = Key::open(ctx, &keys::lock_key(name), true) else {
        return;
    };
    match key.kind() {
        Kind::Empty => {
            let signal = check.signal_if_free && !keys::signal_pending(ctx, name);
            hand_over_or_free(ctx, &mut key, name, now, signal)
        }
        Kind::String => {
            if check
                .take_back
                .as_deref()
                .is_some_and(|t| keys::holds(&key, t))
            {
                hand_over_or_free(ctx, &mut key, name, now, true);
            } else if let Some(at) = key.expires_at() {
                lease_changed(ctx, name, at);
            }
        }
        Kind::Other => {}
    }
}
