//! The LOCK.* commands, one file each. Every handler keeps one order: check arity, parse
//! *every* argument (a syntax error changes nothing), check the caller's rights, check the
//! key's type, then serve at once or block.

use crate::entry_point;
use crate::keys;
use crate::redis::{create_command, ArgType, CmdError, CmdResult, CommandSpec, Ctx};

mod acquire;
mod info;
mod owner;
mod release;
mod renew;
mod resetall;
mod unblock;

/// The longest lease or wait accepted, in milliseconds: far enough from `i64::MAX` that
/// "now + ttl" never overflows Redis's expire arithmetic.
pub const MAX_MS: i64 = i64::MAX / 4;

pub fn arity_error(command: &str) -> CmdError {
    CmdError(format!(
        "ERR wrong number of arguments for '{command}' command"
    ))
}

/// A non-negative decimal integer as Redis's own parser (`string2ll`) takes it: digits only,
/// no sign, no spaces, no leading zeros (`0` itself is fine).
pub fn parse_u64(arg: &[u8]) -> Option<u64> {
    let canonical = match arg {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical || arg.len() > 20 {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// `ttl` in whole seconds, at least 1; returned in milliseconds.
pub fn parse_ttl(arg: &[u8]) -> Result<i64, CmdError> {
    let secs = parse_u64(arg)
        .filter(|s| *s >= 1)
        .ok_or_else(|| CmdError("ERR ttl must be a positive integer number of seconds".into()))?;
    let max = MAX_MS as u64 / 1000;
    if secs > max {
        return Err(CmdError(format!(
            "ERR ttl is out of range (at most {max} seconds)"
        )));
    }
    Ok(secs as i64 * 1000)
}

/// `BLOCK ms`: milliseconds to wait, 0 meaning no limit.
pub fn parse_block(arg: &[u8]) -> Result<i64, CmdError> {
    let ms = parse_u64(arg).ok_or_else(|| {
        CmdError("ERR BLOCK must be a non-negative integer number of milliseconds".into())
    })?;
    if ms > MAX_MS as u64 {
        return Err(CmdError(format!(
            "ERR BLOCK is out of range (at most {MAX_MS} milliseconds)"
        )));
    }
    Ok(ms as i64)
}

pub fn parse_token(arg: &[u8]) -> Result<&[u8], CmdError> {
    if arg.is_empty() {
        return Err(CmdError("ERR token must not be empty".into()));
    }
    Ok(arg)
}

/// The lock's key name, after checking that this node may write the lock's keys and that the
/// caller may write them: see `may_write_keys`.
pub fn writable_keys(ctx: Ctx, name: &[u8], fence: bool) -> Result<keys::KeyName, CmdError> {
    if !ctx.may_write() {
        return Err(CmdError(
            "READONLY You can't write against a read only replica.".into(),
        ));
    }
    check_slot(ctx, name)?;
    let lock_key = keys::lock_key(name);
    if !may_write_keys(ctx, name, fence) {
        return Err(no_permission_to_write(fence));
    }
    Ok(lock_key)
}

/// Whether the caller may read and write the lock's keys in one command, as the server would
/// judge a core command doing it: `LMPOP n lock:<name> lock-signal:<name> [lock-fence:<name>]
/// LEFT`, whose key specs read and write every key it names. ACL then asks what it asks of
/// any core command: one selector must allow the command and every key (`%R~`/`%W~` both
/// needed). LOCK.ACQUIRE, LOCK.RELEASE and LOCK.RENEW read the owner and write the lock in one
/// atomic step, as a multi-key script would; checking each key alone (or a command per key)
/// would pass keys through different selectors, which the server never does.
pub fn may_write_keys(ctx: Ctx, name: &[u8], fence: bool) -> bool {
    let (lock, signal, fence_key) = (
        keys::lock_key(name),
        keys::signal_key(name),
        keys::fence_key(name),
    );
    if fence {
        ctx.may_run(&[b"LMPOP", b"3", &lock, &signal, &fence_key, b"LEFT"])
    } else {
        ctx.may_run(&[b"LMPOP", b"2", &lock, &signal, b"LEFT"])
    }
}

/// Whether the caller may read `lock:<name>`: `GET lock:<name>`, which LOCK.OWNER is.
pub fn may_read_lock(ctx: Ctx, key_name: &[u8]) -> bool {
    ctx.may_run(&[b"GET", key_name])
}

/// In cluster mode the command is routed by `name`; its keys must live in the same slot.
pub fn check_slot(ctx: Ctx, name: &[u8]) -> Result<(), CmdError> {
    if ctx.in_cluster() && !keys::same_slot(name) {
        return Err(CmdError(
            "ERR in cluster mode a lock name needs a {hashtag}, e.g. '{orders}', so that lock:<name> and lock-signal:<name> are in the name's slot"
                .into(),
        ));
    }
    Ok(())
}

pub fn no_permission_to_write(fence: bool) -> CmdError {
    let keys = if fence {
        "lock:<name>, lock-signal:<name> and lock-fence:<name>"
    } else {
        "lock:<name> and lock-signal:<name>"
    };
    CmdError(format!(
        "NOPERM this user has no permissions to read and write the lock's keys ({keys}) in one command (checked as LMPOP on them)"
    ))
}

pub fn no_permission_to_read() -> CmdError {
    CmdError(
        "NOPERM this user has no permissions to read the lock's key (lock:<name>; checked as GET on it)".into(),
    )
}

/// The key a command on lock `name` is routed by in cluster mode: `lock:<name>`, where the lock
/// is (or will be) held, so that the server's own routing sends it to the node holding the
/// lock while its slot migrates (`-ASK` once the lock has left, `MIGRATE` never finding it
/// taken on the target). A name without a usable hashtag is routed by itself, and refused.
pub fn routing_key(name: &[u8]) -> keys::KeyName {
    if keys::same_slot(name) {
        keys::lock_key(name)
    } else {
        keys::KeyName::copy(name)
    }
}

/// In cluster mode the command filter put `routing_key(name)` in front of `name` (argument 1,
/// the position the key spec gives the server): check it and run `run` on the arguments as the
/// client sent them. Outside cluster mode nothing is put in and `run` runs as it is.
fn routed(ctx: Ctx, args: &[&[u8]], run: fn(Ctx, &[&[u8]]) -> CmdResult) -> CmdResult {
    if !ctx.in_cluster() || args.len() < 2 {
        return run(ctx, args); // no name: an arity error
    }
    let [command, key, name, rest @ ..] = args else {
        return Err(not_routed());
    };
    if *key != &*routing_key(name) {
        return Err(not_routed());
    }
    if rest.len() > 6 {
        // Too long for any valid call: handed over whole, for the error it is due.
        let long: Vec<&[u8]> = [*command, *name]
            .into_iter()
            .chain(rest.iter().copied())
            .collect();
        return run(ctx, &long);
    }
    let mut buf: [&[u8]; 8] = [&[]; 8];
    buf[0] = command;
    buf[1] = name;
    buf[2..2 + rest.len()].copy_from_slice(rest);
    run(ctx, &buf[..2 + rest.len()])
}

fn not_routed() -> CmdError {
    CmdError(
        "ERR rlock: in cluster mode the module's command filter must see every LOCK.* call".into(),
    )
}

fn acquire_routed(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    routed(ctx, args, acquire::run)
}

fn release_routed(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    routed(ctx, args, release::run)
}

fn renew_routed(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    routed(ctx, args, renew::run)
}

fn owner_routed(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    routed(ctx, args, owner::run)
}

fn info_routed(ctx: Ctx, args: &[&[u8]]) -> CmdResult {
    routed(ctx, args, info::run)
}

/// The commands taking a lock's name, which the cluster filter routes (lowercase).
pub const ROUTED: [&[u8]; 5] = [
    b"lock.acquire",
    b"lock.release",
    b"lock.renew",
    b"lock.owner",
    b"lock.info",
];

const NAME: (&std::ffi::CStr, ArgType, Option<&std::ffi::CStr>, bool) =
    (c"name", ArgType::Key, None, false);
const TOKEN: (&std::ffi::CStr, ArgType, Option<&std::ffi::CStr>, bool) =
    (c"token", ArgType::String, None, false);
const TTL: (&std::ffi::CStr, ArgType, Option<&std::ffi::CStr>, bool) =
    (c"ttl", ArgType::Integer, None, false);

/// Register every LOCK.* command with its docs. False if Redis refused one.
pub fn register(ctx: &redis_module::Context) -> bool {
    let specs = [
        CommandSpec {
            name: c"LOCK.ACQUIRE",
            entry: entry_point!(acquire_routed),
            flags: c"write deny-oom",
            arity: -4,
            summary: c"Take the lock `name` for `token` for `ttl` seconds; with BLOCK, wait in line up to `ms` milliseconds (0: no limit). Replies OK, or nil if not taken. Token `*`: the server makes one and replies it instead of OK. FENCE: reply a fence (above every fence issued before for the name). BIND: also let go when this connection goes away.",
            complexity: c"O(1)",
            takes_name: true,
            writes: true,
            acl_categories: None,
            args: &[
                NAME,
                TOKEN,
                TTL,
                (c"ms", ArgType::Integer, Some(c"BLOCK"), true),
                (c"fence", ArgType::PureToken, Some(c"FENCE"), true),
                (c"bind", ArgType::PureToken, Some(c"BIND"), true),
            ],
        },
        CommandSpec {
            name: c"LOCK.RELEASE",
            entry: entry_point!(release_routed),
            flags: c"write fast",
            arity: 3,
            summary: c"Release the lock `name` if `token` owns it, handing it to the first waiter. Replies 1 if released, else 0.",
            complexity: c"O(1)",
            takes_name: true,
            writes: true,
            acl_categories: None,
            args: &[NAME, TOKEN],
        },
        CommandSpec {
            name: c"LOCK.RENEW",
            entry: entry_point!(renew_routed),
            flags: c"write fast",
            arity: 4,
            summary: c"Set the lease of lock `name` to `ttl` seconds from now if `token` owns it. Replies 1 if renewed, else 0.",
            complexity: c"O(1)",
            takes_name: true,
            writes: true,
            acl_categories: None,
            args: &[NAME, TOKEN, TTL],
        },
        CommandSpec {
            name: c"LOCK.OWNER",
            entry: entry_point!(owner_routed),
            flags: c"readonly fast",
            arity: 2,
            summary: c"Reply the token owning lock `name`, or nil if it is free.",
            complexity: c"O(1)",
            takes_name: true,
            writes: false,
            acl_categories: None,
            args: &[NAME],
        },
        CommandSpec {
            name: c"LOCK.INFO",
            entry: entry_point!(info_routed),
            flags: c"readonly fast",
            arity: 2,
            summary: c"Reply what there is to know about lock `name`: owner, ttl (ms), waiters queued, whether a python-redis-lock client may be waiting.",
            complexity: c"O(1)",
            takes_name: true,
            writes: false,
            acl_categories: None,
            args: &[NAME],
        },
        CommandSpec {
            name: c"LOCK.RESETALL",
            entry: entry_point!(resetall::run),
            flags: c"write admin",
            arity: 1,
            summary: c"Remove every lock of the current database (module or python-redis-lock), wake their waiters, reply how many were removed.",
            complexity: c"O(N) where N is the number of keys in the database",
            takes_name: false,
            writes: true,
            acl_categories: Some(c"keyspace write dangerous"),
            args: &[],
        },
        CommandSpec {
            name: c"LOCK.CLIENTUNBLOCK",
            entry: entry_point!(unblock::run),
            flags: c"admin no-auth deny-script allow-loading allow-stale",
            arity: -2,
            summary: c"Internal: what the module's command filter makes `CLIENT UNBLOCK` of an authenticated user; checks CLIENT UNBLOCK's rights itself. Sent by a client, it is LOCK.UNBLOCK.",
            complexity: c"O(1)",
            takes_name: false,
            writes: false,
            acl_categories: Some(c"admin slow dangerous connection"),
            args: &[
                (c"client-id", ArgType::Integer, None, false),
                (c"reason", ArgType::String, None, true),
            ],
        },
        CommandSpec {
            name: c"LOCK.UNBLOCK",
            entry: entry_point!(unblock::run),
            flags: c"admin deny-script allow-loading allow-stale",
            arity: -2,
            summary: c"What every `CLIENT UNBLOCK client-id [TIMEOUT|ERROR]` becomes (the module's command filter), decided when it runs: a client waiting in LOCK.ACQUIRE is unblocked by the module, any other by the server's CLIENT UNBLOCK. Same arguments, rights and replies.",
            complexity: c"O(1)",
            takes_name: false,
            writes: false,
            acl_categories: Some(c"admin slow dangerous connection"),
            args: &[
                (c"client-id", ArgType::Integer, None, false),
                (c"reason", ArgType::String, None, true),
            ],
        },
    ];
    specs.iter().all(|spec| create_command(ctx, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parsing_table() {
        let ok = [("1", 1000), ("60", 60_000), ("10", 10_000)];
        for (arg, ms) in ok {
            assert_eq!(parse_ttl(arg.as_bytes()), Ok(ms), "{arg}");
        }
        for bad in [
            "0",
            "-1",
            "",
            "1.5",
            "abc",
            " 1",
            "+1",
            "-0",
            "007",
            "0000000000000000000001",
            "1 ",
            "99999999999999999999",
        ] {
            assert!(parse_ttl(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(parse_ttl((MAX_MS as u64 / 1000).to_string().as_bytes()).is_ok());
        assert!(parse_ttl((MAX_MS as u64 / 1000 + 1).to_string().as_bytes())
            .unwrap_err()
            .0
            .contains("out of range"));
    }

    #[test]
    fn block_parsing_table() {
        assert_eq!(parse_block(b"0"), Ok(0));
        assert_eq!(parse_block(b"5000"), Ok(5000));
        for bad in ["-1", "", "x", "1e3", "9999999999999999999"] {
            assert!(parse_block(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn routing_key_is_the_lock_key_for_names_with_a_hashtag() {
        for (name, key) in [
            ("{orders}", "lock:{orders}"),
            ("app:{orders}:eu", "lock:app:{orders}:eu"),
            ("orders", "orders"),
            ("{}orders", "{}orders"),
        ] {
            assert_eq!(&*routing_key(name.as_bytes()), key.as_bytes(), "{name}");
            assert_eq!(
                keys::slot(&routing_key(name.as_bytes())),
                keys::slot(name.as_bytes()),
                "{name}: clients route by the name, the server by this key"
            );
        }
    }

    #[test]
    fn empty_token_is_refused() {
        assert!(parse_token(b"").is_err());
        assert_eq!(parse_token(b"t"), Ok(&b"t"[..]));
    }
}
