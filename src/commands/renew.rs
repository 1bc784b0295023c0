//! `LOCK.RENEW name token ttl`
//!
//! If `token` owns the lock, its lease ends `ttl` seconds from now → 1. Otherwise → 0.

use super::{arity_error, parse_token, parse_ttl, writable_keys};
use crate::core::later;
use crate::ffi::{CmdResult, Ctx, Reply};
use crate::{keys, wake};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name, token, ttl] = args else {
        return Err(arity_error("LOCK.RENEW"));
    };
    let (token, ttl_ms) = (parse_token(token)?, parse_ttl(ttl)?);
    let key_name = writable_keys(ctx, name)?;
    let mut key = keys::open_lock(ctx, &key_name, true)?;
    if !keys::holds(&key, token) {
        return Ok(Reply::Int(0));
    }
    let at = later(Ctx::now_ms(), ttl_ms);
    keys::write_expiry(ctx, &mut key, &key_name, at);
    wake::lease_changed(ctx, name, at);
    Ok(Reply::Int(1))
}
