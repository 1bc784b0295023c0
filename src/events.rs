//! What the server reports, turned into engine calls: the handlers the Redis layer is given at
//! load (`handlers`). Thin on purpose: every decision is the engine's.

use crate::engine;
use crate::keys;
use crate::redis::{CmdResult, Ctx, Handle, Handlers, ServerEvent, Unblocked};

/// The handlers for `redis::subscribe`.
pub fn handlers() -> Handlers {
    Handlers {
        reply,
        disconnected: engine::waiter_left,
        timer: engine::timer_fired,
        key_event,
        server_event,
        takes_unblock: engine::takes_unblock,
        unblock_command: c"LOCK.UNBLOCK",
    }
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
        engine::lock_freed(ctx, name);
    } else {
        engine::lock_changed(ctx, name);
    }
}

/// A flush, swap, reload or role change: any waited-for lock of the databases involved may
/// have changed.
fn server_event(ctx: Ctx, event: ServerEvent) {
    match event {
        ServerEvent::Flushed(db) => engine::databases_changed(ctx, db),
        ServerEvent::Swapped(a, b) => {
            engine::databases_changed(ctx, Some(a));
            engine::databases_changed(ctx, Some(b));
        }
        ServerEvent::Loaded | ServerEvent::RoleChanged => engine::databases_changed(ctx, None),
    }
}
