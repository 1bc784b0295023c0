//! `LOCK.RESETALL`
//!
//! Remove every `lock:*` key of the current database, whoever made it, signal each lock's
//! python-redis-lock waiters as its `reset_all` does, hand each lock to its first module
//! waiter, and reply how many locks were removed. As destructive as FLUSHDB, so it asks for
//! FLUSHDB's rights: a user kept from FLUSHDB (`-@dangerous`, `-flushdb`, ...) is kept from
//! it too. (Redis 7.0 puts module commands in no ACL category; from 7.2 it is also in
//! `@keyspace @write @dangerous` itself.)

use super::arity_error;
use crate::ffi::{CmdError, CmdResult, Ctx, Key, Reply};
use crate::{keys, wake};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    if args.len() != 1 {
        return Err(arity_error("LOCK.RESETALL"));
    }
    if !ctx.may_write() {
        return Err(CmdError(
            "READONLY You can't write against a read only replica.".into(),
        ));
    }
    if !ctx.may_run(&[b"FLUSHDB"]) {
        return Err(CmdError(
            "NOPERM LOCK.RESETALL needs the rights to run FLUSHDB, which this user does not have"
                .into(),
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
