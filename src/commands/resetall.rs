//! `LOCK.RESETALL`
//!
//! Remove every `lock:*` key of the current database, whoever made it, signal each lock's
//! python-redis-lock waiters as its `reset_all` does, hand each lock to its first module
//! waiter, and reply how many locks were removed. Flagged `admin`: ACL keeps restricted
//! users from it (`-@dangerous` or `-@admin`).

use super::arity_error;
use crate::ffi::{CmdError, CmdResult, Ctx, Key, Reply};
use crate::{keys, wake};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    if args.len() != 1 {
        return Err(arity_error("lock.resetall"));
    }
    if !ctx.may_write() {
        return Err(CmdError(
            "READONLY You can't write against a read only replica.".into(),
        ));
    }
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
        keys::signal(ctx, name, now);
        wake::hand_over_or_free(ctx, &mut key, name, now, false);
    }
    Ok(Reply::Int(removed))
}
