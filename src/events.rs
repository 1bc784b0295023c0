//! What the server reports, turned into engine calls: the handlers the Redis layer is given at
//! load (`handlers`). Thin on purpose: every decision is the engine's.

use crate::engine;
use crate::keys;
use crate::redis::{CmdResult, Ctx, Filtered, Handle, Handlers, ServerEvent, Unblocked};

/// The handlers for `redis::subscribe`.
pub fn handlers() -> Handlers {
    Handlers {
        reply,
        disconnected: engine::waiter_left,
        timer: engine::timer_fired,
        key_event,
        server_event,
        command,
        info: engine::info,
    }
}

/// Every command, before it runs (those scripts run too). These matter:
/// - `CLIENT UNBLOCK <id> [how]` of a client the module must unblock itself becomes
///   `LOCK.UNBLOCK <id> [how]`;
/// - python-redis-lock's acquire: `SET lock:<name> ...` and `BLPOP lock-signal:<name> ...
///   timeout` (also `BRPOP`), which tell the engine a python client may wait for `name`, and
///   its release's `LPUSH lock-signal:<name>`, which wakes one.
///
/// Everything else is two length checks and at most a few byte compares.
fn command(cmd: &Filtered) {
    let argc = cmd.len();
    if argc < 3 {
        return;
    }
    let name = cmd.arg(0);
    if name.eq_ignore_ascii_case(b"set") {
        if let Some(lock) = cmd.arg(1).strip_prefix(keys::LOCK_PREFIX) {
            engine::python_tries(lock);
        }
    } else if name.eq_ignore_ascii_case(b"blpop") || name.eq_ignore_ascii_case(b"brpop") {
        let Some(timeout) = block_timeout_ms(cmd.arg(argc - 1)) else {
            return; // the server refuses it
        };
        for i in 1..argc - 1 {
            if let Some(lock) = cmd.arg(i).strip_prefix(keys::SIGNAL_PREFIX) {
                engine::python_waits(cmd.client_id(), lock, timeout);
            }
        }
    } else if name.eq_ignore_ascii_case(b"lpush") || name.eq_ignore_ascii_case(b"rpush") {
        // python-redis-lock's release and reset scripts push a signal themselves (filters see
        // the commands scripts run): it wakes one of the python waiters.
        if let Some(lock) = cmd.arg(1).strip_prefix(keys::SIGNAL_PREFIX) {
            engine::python_signalled_elsewhere(lock);
        }
    } else if argc <= 4
        && name.eq_ignore_ascii_case(b"client")
        && cmd.arg(1).eq_ignore_ascii_case(b"unblock")
    {
        if let Some(id) = client_id(cmd.arg(2)) {
            if engine::takes_unblock(id) {
                cmd.rename(c"LOCK.UNBLOCK", 2);
            }
        }
    }
}

/// An id as the server itself reads it in `CLIENT UNBLOCK` (no sign, no leading zeros):
/// anything else is left to the server's own command, which cannot end the module's waits.
fn client_id(arg: &[u8]) -> Option<u64> {
    if !matches!(arg.first(), Some(b'1'..=b'9')) {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// A blocking pop's timeout, in seconds as the server reads it: `Some(None)` for 0 (no limit),
/// `Some(Some(ms))` rounded up, `None` for what the server refuses (negative, not a number).
fn block_timeout_ms(arg: &[u8]) -> Option<Option<i64>> {
    let secs: f64 = std::str::from_utf8(arg).ok()?.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    if secs == 0.0 {
        return Some(None);
    }
    // `as` saturates: a timeout of centuries waits "forever" here too.
    Some(Some((secs * 1000.0).ceil() as i64))
}

fn reply(_ctx: Ctx, handle: Handle, how: Unblocked) -> CmdResult {
    engine::answer(handle, how)
}

/// A keyspace event on any key; only `lock:<name>` keys matter. `del`, `expired`, `evicted`,
/// `rename_from` and `move_from` free a lock; anything else may change its lease.
fn key_event(ctx: Ctx, key: &[u8], event: &[u8]) {
    let Some(name) = key.strip_prefix(keys::LOCK_PREFIX) else {
        return;
    };
    let frees = matches!(
        event,
        b"del" | b"expired" | b"evicted" | b"rename_from" | b"move_from"
    );
    if frees {
        let expired = matches!(event, b"expired" | b"evicted");
        engine::lock_freed(ctx, name, expired);
    } else {
        engine::lock_changed(ctx, name);
    }
}

/// A flush, swap, reload or role change: any waited-for lock of the databases involved may
/// have changed. A client gone: the locks bound to it are let go.
fn server_event(ctx: Ctx, event: ServerEvent) {
    match event {
        ServerEvent::Flushed(db) => {
            engine::bindings_end_in(db);
            engine::databases_changed(ctx, db);
        }
        ServerEvent::Swapped(a, b) => {
            // The locks named in a binding are no longer in its database.
            engine::bindings_end_in(Some(a));
            engine::bindings_end_in(Some(b));
            engine::databases_changed(ctx, Some(a));
            engine::databases_changed(ctx, Some(b));
        }
        ServerEvent::Loaded | ServerEvent::RoleChanged => engine::databases_changed(ctx, None),
        ServerEvent::ClientGone(id) => engine::client_gone(ctx, id),
    }
}
