//! `LOCK.OWNER name`
//!
//! The token that owns the lock, or nil when it is free. Read-only: allowed on replicas, and
//! read as `GET` reads, so the value is left exactly as it was.

use super::{arity_error, check_slot, may_read_lock, no_permission_to_read};
use crate::redis::{CmdResult, Ctx};
use crate::{engine, keys};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name] = args else {
        return Err(arity_error("LOCK.OWNER"));
    };
    check_slot(ctx, name)?;
    let key_name = keys::lock_key(name);
    if !may_read_lock(ctx, &key_name) {
        return Err(no_permission_to_read());
    }
    engine::owner(ctx, &key_name)
}
