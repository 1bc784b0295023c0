//! `LOCK.RELEASE name token`
//!
//! If `token` owns the lock: hand it to the first waiter at once, or, with nobody waiting,
//! delete it and wake python-redis-lock's waiters → 1. Otherwise nothing changes → 0.

use super::{arity_error, parse_token, writable_keys};
use crate::engine;
use crate::redis::{CmdResult, Ctx};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name, token] = args else {
        return Err(arity_error("LOCK.RELEASE"));
    };
    let token = parse_token(token)?;
    let key_name = writable_keys(ctx, name, false)?;
    engine::release(ctx, name, &key_name, token)
}
