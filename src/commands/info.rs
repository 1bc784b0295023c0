//! `LOCK.INFO name`
//!
//! What there is to know about one lock, as field/value pairs (a map in RESP3, a flat array in
//! RESP2, like `XINFO`): `owner` (the token, or nil when free), `ttl` (ms left of the lease; -1
//! without one, -2 when free, as `PTTL`), `waiters` (module clients queued for it), `python`
//! (1 if a python-redis-lock client may be waiting for it), `bound_to` (the id of the client a
//! `BIND` lock is bound to, or nil), `fence` (the last fence issued, or nil). Read-only: allowed
//! on replicas.
//!
//! Rights: those of `GET lock:<name>`; the `fence` field is left out for a user who may not
//! `HGET lock-fence:<name> fence` (each field is what a read command of its own would give).

use super::{arity_error, check_slot, may_read_lock, no_permission_to_read};
use crate::redis::{CmdResult, Ctx, Reply};
use crate::{engine, keys};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name] = args else {
        return Err(arity_error("LOCK.INFO"));
    };
    check_slot(ctx, name)?;
    let key_name = keys::lock_key(name);
    if !may_read_lock(ctx, &key_name) {
        return Err(no_permission_to_read());
    }
    let fence_key = keys::fence_key(name);
    let show_fence = ctx.may_run(&[b"HGET", &fence_key, b"fence"]);
    let mut info = engine::lock_info(ctx, name, &key_name)?;
    if !show_fence {
        if let Reply::Map(fields) = &mut info {
            fields.retain(|(field, _)| *field != "fence");
        }
    }
    Ok(info)
}
