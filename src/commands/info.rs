//! `LOCK.INFO name`
//!
//! What there is to know about one lock, as field/value pairs (a map in RESP3, a flat array in
//! RESP2, like `XINFO`): `owner` (the token, or nil when free), `ttl` (ms left of the lease; -1
//! without one, -2 when free, as `PTTL`), `waiters` (module clients queued for it), `python`
//! (1 if a python-redis-lock client may be waiting for it), `bound_to` (the id of the client a
//! `BIND` lock is bound to, or nil), `fence` (the last fence issued, or nil). Read-only: allowed
//! on replicas.

use super::{arity_error, check_slot, no_permission};
use crate::redis::{CmdResult, Ctx};
use crate::{engine, keys};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name] = args else {
        return Err(arity_error("LOCK.INFO"));
    };
    check_slot(ctx, name)?;
    let key_name = keys::lock_key(name);
    if !ctx.may_access(&[&key_name], false) {
        return Err(no_permission());
    }
    engine::lock_info(ctx, name, &key_name)
}
