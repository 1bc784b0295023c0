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
//! Locking rule: the state's mutex is never held across a Redis API call that can call back into
//! this module (opening a key can expire it, which fires a keyspace event).

use std::sync::{LazyLock, Mutex};

use crate::core::{Core, LockId, Removed};
use crate::ffi::{self, CmdResult, Ctx, Handle, Key, Kind, Reply};
use crate::keys;

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
    let deadline = (block_ms > 0).then(|| Ctx::now_ms() + block_ms + 1);
    with(|s| {
        s.core.enqueue(&lock, handle, token, ttl_ms, deadline);
        if let Some(at) = expires_at {
            s.core.schedule(&lock, at + 1, false);
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
            s.core.schedule(&lock, expires_at + 1, false);
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
        ffi::unblock(handle, false);
    }
    let key_name = keys::lock_key(name);
    match grant {
        Some(grant) => {
            let at = now + grant.ttl_ms;
            keys::write_owner(ctx, key, &key_name, &grant.token, at);
            ffi::unblock(grant.handle, true);
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

/// Arm the module timer for the earliest due look, unless it already fires by then.
fn rearm(ctx: Ctx) {
    let now = Ctx::now_ms();
    let (stop, due) = with(|s| match (s.core.next_due(), s.timer) {
        (Some(at), Some((id, armed))) if at < armed => (Some(id), Some(at)),
        (Some(at), None) => (None, Some(at)),
        _ => (None, None),
    });
    if let Some(id) = stop {
        ctx.stop_timer(id);
    }
    if let Some(at) = due {
        let id = ctx.create_timer(at - now);
        with(|s| s.timer = Some((id, at)));
    }
}

// ---- callbacks (called from ffi.rs) ----

/// A blocked client is being answered: `OK` if it was handed the lock, else nil.
pub fn on_reply(ctx: Ctx) -> CmdResult {
    let handle = ctx.blocked_handle();
    with(|s| s.core.delivered(handle));
    Ok(if ctx.blocked_granted() {
        Reply::Ok
    } else {
        Reply::Nil
    })
}

/// `CLIENT UNBLOCK` (BLOCK deadlines are the core's, so Redis never times a waiter out itself):
/// the waiter leaves the queue (ffi replies nil).
pub fn on_timeout(ctx: Ctx) {
    leave(ctx.blocked_handle());
}

/// Redis unblocked a waiter without the module: a disconnection, or, on Redis 7.0, a
/// `CLIENT UNBLOCK` that lands in the same event-loop pass as the grant that already unblocked
/// it (7.0 then skips both the timeout and the reply callback, so this is the only moment the
/// client can still be answered). A waiter that was already granted is
/// answered nil and its lock taken back at once, before anything else can see it or the
/// client can retry with the same token; true when the caller must send that nil.
pub fn on_disconnect(ctx: Ctx, handle: Handle) -> bool {
    let Removed::Granted { lock, token } = leave(handle) else {
        return false;
    };
    // The context's client is the waiter, which blocked in the lock's database.
    if ctx.may_write() && ctx.db() == lock.db {
        if let Some(mut key) = Key::open(ctx, &keys::lock_key(&lock.name), true) {
            if key.kind() == Kind::String && key.value() == &*token {
                hand_over_or_free(ctx, &mut key, &lock.name, Ctx::now_ms(), true);
            }
        }
    }
    true
}

/// A waiter leaves without the lock. Redis frees a blocked client's handle (and the reply
/// client it keeps for it) only once the module unblocks it, even after a timeout or a
/// disconnection; a waiter already granted was unblocked then, and must not be twice.
fn leave(handle: Handle) -> Removed {
    let removed = with(|s| s.core.remove(handle));
    if removed == Removed::Queued {
        ffi::unblock(handle, false);
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

/// The module timer fired: perform every due look.
pub fn on_timer(ctx: Ctx) {
    let now = Ctx::now_ms();
    let (timed_out, due) = with(|s| {
        s.timer = None;
        (s.core.take_timed_out(now), s.core.take_due(now))
    });
    for handle in timed_out {
        ffi::unblock(handle, false);
    }
    if ctx.may_write() {
        for check in due {
            if !ctx.select_db(check.lock.db) {
                continue;
            }
            let name = &check.lock.name;
            let Some(mut key) = Key::open(ctx, &keys::lock_key(name), true) else {
                continue;
            };
            match key.kind() {
                Kind::Empty => {
                    let signal = check.signal_if_free && !keys::signal_pending(ctx, name);
                    hand_over_or_free(ctx, &mut key, name, now, signal)
                }
                Kind::String => {
                    if let Some(at) = key.expires_at() {
                        lease_changed(ctx, name, at);
                    }
                }
                Kind::Other => {}
            }
        }
    }
    rearm(ctx);
}
