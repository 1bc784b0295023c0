//! `LOCK.ACQUIRE name token ttl [BLOCK ms] [FENCE] [BIND]`
//!
//! Free lock: `token` takes it for `ttl` seconds → `OK`. Held by `token`: the lease is renewed
//! → `OK` (a retry after a lost reply is safe). Held by another: nil, or with `BLOCK`, wait in
//! line (first come, first served) up to `ms` milliseconds (0: no limit) → `OK` when handed
//! the lock, nil when the time is up. Never blocks inside MULTI, scripts or functions.
//!
//! `FENCE`: the reply is a fence (an integer above every fence issued before for the name,
//! kept in `lock-fence:<name>`), or `[token, fence]` with `*`.
//!
//! `BIND`: the lock is also let go, and handed on, as soon as the acquiring connection goes
//! away (see `engine::client_gone`).
//!
//! `token` `*`: the server makes a token (24 characters of base64 from 18 random bytes, like
//! python-redis-lock's ids) and replies it instead of `OK`. A retry with `*` is a new
//! acquisition.

use super::{arity_error, parse_block, parse_token, parse_ttl, writable_keys};
use crate::engine;
use crate::redis::{CmdError, CmdResult, Ctx};

pub fn run(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    let [_, name, token, ttl, options @ ..] = args else {
        return Err(arity_error("LOCK.ACQUIRE"));
    };
    let (token, ttl_ms) = (parse_token(token)?, parse_ttl(ttl)?);
    let mut block_ms = None;
    let mut bind = false;
    let mut fence = false;
    let mut rest = options;
    while let [option, more @ ..] = rest {
        if option.eq_ignore_ascii_case(b"FENCE") {
            if fence {
                return Err(CmdError("ERR FENCE given twice".into()));
            }
            fence = true;
            rest = more;
        } else if option.eq_ignore_ascii_case(b"BIND") {
            if bind {
                return Err(CmdError("ERR BIND given twice".into()));
            }
            bind = true;
            rest = more;
        } else if option.eq_ignore_ascii_case(b"BLOCK") {
            let [ms, more @ ..] = more else {
                return Err(arity_error("LOCK.ACQUIRE"));
            };
            if block_ms.is_some() {
                return Err(CmdError("ERR BLOCK given twice".into()));
            }
            block_ms = Some(parse_block(ms)?);
            rest = more;
        } else {
            // At most 128 bytes of it, as Redis quotes an unknown command.
            let option = String::from_utf8_lossy(&option[..option.len().min(128)]);
            return Err(CmdError(format!(
                "ERR unknown option '{option}' (expected BLOCK ms, FENCE or BIND)"
            )));
        }
    }
    if bind && ctx.in_script() {
        // The connection the lock would be bound to is the script engine's, which never goes
        // away: the lock would outlive the caller. Bind from the caller's own connection.
        return Err(CmdError(
            "ERR BIND is not allowed in scripts and functions (the lock would be bound to the script engine, not to the caller's connection)"
                .into(),
        ));
    }
    let key_name = writable_keys(ctx, name, fence)?;
    // `*`: the server makes the token and replies it instead of `OK`, as `XADD *` replies
    // the id it made.
    let made;
    let (token, reply_token) = if token == b"*" {
        made = engine::new_token();
        (made.as_bytes(), true)
    } else {
        (token, false)
    };
    let how = engine::Acquire {
        ttl_ms,
        block_ms,
        reply_token,
        bind,
        fence,
    };
    engine::acquire(ctx, name, &key_name, token, how)
}
