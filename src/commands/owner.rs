//! `LOCK.OWNER name`
//!
//! The token that owns the lock, or nil when it is free. Read-only: allowed on replicas.

use super::{arity_error, check_slot, no_permission};
use crate::ffi::{CmdResult, Ctx, Kind, Reply};
use crate::keys;

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name] = args else {
        return Err(arity_error("lock.owner"));
    };
    check_slot(ctx, name)?;
    let key_name = keys::lock_key(name);
    if !ctx.may_access(&[&key_name], false) {
        return Err(no_permission());
    }
    let key = keys::open_lock(ctx, &key_name, false)?;
    Ok(match key.kind() {
        Kind::String => Reply::Bulk(key.value().to_vec()),
        _ => Reply::Nil,
    })
}
