//! `LOCK.UNBLOCK client-id [TIMEOUT|ERROR]` (and `LOCK.CLIENTUNBLOCK`, the same)
//!
//! What every `CLIENT UNBLOCK <id> [TIMEOUT|ERROR]` becomes (rewritten by the module's command
//! filter when it is sent or queued; decided here, when it runs). Same arguments, rights and
//! replies as `CLIENT UNBLOCK`: `1` when a lock waiter left its queue (it is answered nil, or
//! `-UNBLOCKED ...` with `ERROR`); for any other client the server's own `CLIENT UNBLOCK` runs
//! (`0` for a client that is not waiting, e.g. a waiter already handed the lock, which gets its
//! `OK`).
//!
//! Rights: `CLIENT UNBLOCK`'s, checked here for the user running it now. The server checks
//! `LOCK.UNBLOCK` as itself (authentication, and its own ACL rights); `LOCK.CLIENTUNBLOCK` is
//! flagged `no-auth`, so the server checks nothing for it: the filter chooses it only for a
//! client that is surely authenticated (it runs as a user other than `default`, or `default`
//! has no password; `redis::acl::surely_authenticated`), and turns it back into `LOCK.UNBLOCK`
//! when a client sends it.

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
