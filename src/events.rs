//! What the server reports, turned into engine calls: the handlers the Redis layer is given at
//! load (`handlers`). Thin on purpose: every decision is the engine's.

use crate::commands;
use crate::engine;
use crate::keys;
use crate::redis::{
    cluster_mode, CmdResult, Ctx, Filtered, Handle, Handlers, ServerEvent, Unblocked,
};

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
/// - `CLIENT UNBLOCK <id> [how]` (an id as the server writes them) becomes `LOCK.UNBLOCK <id>
///   [how]`, which ends a lock wait itself and runs the server's own `CLIENT UNBLOCK` for any
///   other client: when the sender is surely authenticated, as `LOCK.CLIENTUNBLOCK`, which the
///   server lets anyone run and which checks `CLIENT UNBLOCK`'s rights itself (see
///   `commands::unblock`);
/// - python-redis-lock's acquire: `SET lock:<name> ...` and `BLPOP lock-signal:<name> ...
///   timeout` (also `BRPOP`), which tell the engine a python client may wait for `name`, and
///   its release's `LPUSH lock-signal:<name>`, which wakes one;
/// - `SETEX`, `PSETEX`, `GETSET` and `MSET` of `lock:<name>` (string writes raise no event the
///   module hears): whoever holds it afterwards has not held it throughout (`SET` is told
///   through `python_tries`).
///
/// Everything else is two length checks and at most a few byte compares.
///
/// In cluster mode also every `LOCK.<cmd> name ...` that takes a lock's name: the name's
/// routing key (`lock:<name>`) is put in front of it, as argument 1, the position the key spec
/// gives the server's routing (clients, which never see it, route by the name in that
/// position, as `COMMAND INFO` tells them; same slot). The server then routes by the key that
/// holds the lock: during a slot migration a call is served where the lock is, and
/// `-ASK`-redirected only once it has left.
fn command(cmd: &Filtered) {
    let argc = cmd.len();
    if cluster_mode() && argc >= 2 && route(cmd) {
        return;
    }
    let name = cmd.arg(0);
    if name.eq_ignore_ascii_case(b"lock.clientunblock") {
        // Renamed so by this filter in an earlier pass (Redis 7.0 filters a command held back by
        // CLIENT PAUSE again): left as it is.
        if !cmd.is_own(0) {
            unblock_as_sent(cmd);
        }
        return;
    }
    if argc < 3 {
        return;
    }
    if name.eq_ignore_ascii_case(b"set") {
        if let Some(lock) = cmd.arg(1).strip_prefix(keys::LOCK_PREFIX) {
            engine::python_tries(lock);
        }
    } else if name.eq_ignore_ascii_case(b"setex")
        || name.eq_ignore_ascii_case(b"psetex")
        || name.eq_ignore_ascii_case(b"getset")
    {
        if let Some(lock) = cmd.arg(1).strip_prefix(keys::LOCK_PREFIX) {
            engine::lock_replaced(lock);
        }
    } else if name.eq_ignore_ascii_case(b"mset") {
        for i in (1..argc).step_by(2) {
            if let Some(lock) = cmd.arg(i).strip_prefix(keys::LOCK_PREFIX) {
                engine::lock_replaced(lock);
            }
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
        && client_id(cmd.arg(2)).is_some()
    {
        // Whatever the target is now: whether it waits for a lock is decided when the command
        // runs (queued in MULTI, or held back by a pause, it runs later).
        if cmd.sender_surely_authenticated() {
            cmd.rename(c"LOCK.CLIENTUNBLOCK", 2);
        } else {
            cmd.rename(c"LOCK.UNBLOCK", 2);
        }
    }
}

/// `LOCK.CLIENTUNBLOCK` skips the server's checks: only this filter may choose it. Sent by a
/// client (a script, another module), it is `LOCK.UNBLOCK`, checked by the server as itself.
fn unblock_as_sent(cmd: &Filtered) {
    cmd.rename(c"LOCK.UNBLOCK", 1);
}

/// Cluster mode: put the routing key in front of a LOCK.* command's name (see `command`).
fn route(cmd: &Filtered) -> bool {
    let name = cmd.arg(0);
    let routed = name.len() >= 9
        && name[..5].eq_ignore_ascii_case(b"lock.")
        && commands::ROUTED
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c));
    // Routed by this filter in an earlier pass (Redis 7.0 filters a command held back by CLIENT
    // PAUSE again): the key is in already.
    if routed && !cmd.is_own(1) {
        cmd.insert(1, &commands::routing_key(cmd.arg(1)));
    }
    routed
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

fn reply(ctx: Ctx, handle: Handle, how: Unblocked) -> CmdResult {
    engine::answer(ctx, handle, how)
}

/// A keyspace event on any key; only `lock:<name>` keys matter. `del`, `expired`, `evicted`,
/// `rename_from` and `move_from` free a lock; anything else may change its lease.
fn key_event(ctx: Ctx, key: &[u8], event: &[u8]) {
    let Some(name) = key.strip_prefix(keys::LOCK_PREFIX) else {
        return;
    };
    if !matches!(event, b"expire" | b"persist") {
        engine::lock_replaced(name);
    }
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
