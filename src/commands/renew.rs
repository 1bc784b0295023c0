//! `LOCK.RENEW name token ttl`
//!
//! If `token` owns the lock, its lease ends `ttl` seconds from now → 1. Otherwise → 0.

use super::{arity_error, parse_token, parse_ttl, writable_keys};
use crate::engine;
use crate::redis::{CmdResult, Ctx};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name, token, ttl] = args else {
        return Err(arity_error("LOCK.RENEW"));
    };
    let (token, ttl_ms) = (parse_token(token)?, parse_ttl(ttl)?);
    let key_name = writable_keys(ctx, name, false)?;
    engine::renew(ctx, name, &key_name, token, ttl_ms)
}
