//! `LOCK.RESETALL`
//!
//! Remove every `lock:*` key of the current database, whoever made it, signal each lock's
//! python-redis-lock waiters as its `reset_all` does, hand each lock to its first module
//! waiter, and reply how many locks were removed. As destructive as FLUSHDB, so it asks for
//! FLUSHDB's rights: a user kept from FLUSHDB (`-@dangerous`, `-flushdb`, ...) is kept from
//! it too. (Redis 7.0 puts module commands in no ACL category; from 7.2 it is also in
//! `@keyspace @write @dangerous` itself.)

use super::arity_error;
use crate::engine;
use crate::redis::{CmdError, CmdResult, Ctx};

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
    engine::reset_all(ctx)
}
