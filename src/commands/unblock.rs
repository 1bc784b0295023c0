//! `LOCK.UNBLOCK client-id [TIMEOUT|ERROR]`
//!
//! What `CLIENT UNBLOCK` becomes (rewritten by the module's command filter) when its target
//! waits in `LOCK.ACQUIRE`. Same arguments, rights and replies as `CLIENT UNBLOCK`: `1` when the
//! waiter left its queue (it is answered nil, or `-UNBLOCKED ...` with `ERROR`), `0` when the
//! client is not waiting (a waiter already handed the lock gets its `OK`). For any other
//! client the server's own `CLIENT UNBLOCK` runs.

use super::{arity_error, parse_u64};
use crate::engine;
use crate::redis::{CmdError, CmdResult, Ctx};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let (id, how) = match args {
        [_, id] => (*id, None),
        [_, id, how] => (*id, Some(*how)),
        _ => return Err(arity_error("LOCK.UNBLOCK")),
    };
    let error = match how {
        None => false,
        Some(h) if h.eq_ignore_ascii_case(b"TIMEOUT") => false,
        Some(h) if h.eq_ignore_ascii_case(b"ERROR") => true,
        Some(_) => {
            return Err(CmdError(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into(),
            ))
        }
    };
    let Some(id) = parse_u64(id).and_then(|n| i64::try_from(n).ok()) else {
        return Err(CmdError(
            "ERR value is not an integer or out of range".into(),
        ));
    };
    if !ctx.may_run(&[b"CLIENT", b"UNBLOCK", args[1]]) {
        return Err(CmdError(
            "NOPERM this user has no permissions to run the 'client|unblock' command".into(),
        ));
    }
    engine::unblock(ctx, id, error)
}
