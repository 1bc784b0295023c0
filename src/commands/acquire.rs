//! `LOCK.ACQUIRE name token ttl [BLOCK ms]`
//!
//! Free lock: `token` takes it for `ttl` seconds → `OK`. Held by `token`: the lease is renewed
//! → `OK` (a retry after a lost reply is safe). Held by another: nil, or with `BLOCK`, wait in
//! line (first come, first served) up to `ms` milliseconds (0: no limit) → `OK` when handed
//! the lock, nil when the time is up. Never blocks inside MULTI, scripts or functions.

use super::{arity_error, parse_block, parse_token, parse_ttl, writable_keys};
use crate::engine;
use crate::redis::{CmdError, CmdResult, Ctx};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let (name, token, ttl_ms, block_ms) = match args {
        [_, name, token, ttl] => (*name, parse_token(token)?, parse_ttl(ttl)?, None),
        [_, name, token, ttl, option, ms] => {
            let (token, ttl_ms) = (parse_token(token)?, parse_ttl(ttl)?);
            if !option.eq_ignore_ascii_case(b"BLOCK") {
                // At most 128 bytes of it, as Redis quotes an unknown command.
                let option = String::from_utf8_lossy(&option[..option.len().min(128)]);
                return Err(CmdError(format!(
                    "ERR unknown option '{option}' (expected BLOCK ms)"
                )));
            }
            (*name, token, ttl_ms, Some(parse_block(ms)?))
        }
        _ => return Err(arity_error("LOCK.ACQUIRE")),
    };
    let key_name = writable_keys(ctx, name)?;
    engine::acquire(ctx, name, &key_name, token, ttl_ms, block_ms)
}
