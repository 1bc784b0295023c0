//! The two keys of a lock, as python-redis-lock lays them out, its fence counter, and the
//! writes rlock makes to them. Every write here is paired with its replication as a plain core
//! command with an absolute time, so replicas and the AOF need no module.

use crate::redis::{CmdError, Ctx, EventClass, Key, Kind};

pub const LOCK_PREFIX: &[u8] = b"lock:";
pub const SIGNAL_PREFIX: &[u8] = b"lock-signal:";
pub const FENCE_PREFIX: &[u8] = b"lock-fence:";
/// python-redis-lock's `signal_expire`: how long a wake-up stays in `lock-signal:<name>`.
pub const SIGNAL_TTL_MS: i64 = 1000;

pub fn lock_key(name: &[u8]) -> KeyName {
    KeyName::new(LOCK_PREFIX, name)
}

pub fn signal_key(name: &[u8]) -> KeyName {
    KeyName::new(SIGNAL_PREFIX, name)
}

pub fn fence_key(name: &[u8]) -> KeyName {
    KeyName::new(FENCE_PREFIX, name)
}

/// Names up to this long are built on the stack.
const INLINE: usize = 112;

/// A key's name: a prefix and a lock's name, on the stack when short (most are), so that the
/// hot path allocates nothing for it.
pub enum KeyName {
    Inline(usize, [u8; INLINE]),
    Heap(Vec<u8>),
}

impl KeyName {
    /// A name of its own (no prefix).
    pub fn copy(name: &[u8]) -> KeyName {
        KeyName::new(b"", name)
    }

    fn new(prefix: &[u8], name: &[u8]) -> KeyName {
        let len = prefix.len().saturating_add(name.len());
        if len > INLINE {
            return KeyName::Heap([prefix, name].concat());
        }
        let mut buf = [0u8; INLINE];
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()..len].copy_from_slice(name);
        KeyName::Inline(len, buf)
    }
}

impl std::ops::Deref for KeyName {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            KeyName::Inline(len, buf) => &buf[..*len],
            KeyName::Heap(v) => v,
        }
    }
}

pub fn wrong_type() -> CmdError {
    CmdError("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

/// Open `lock:<name>` (given as `key_name`); a key of another type is `WRONGTYPE`.
pub fn open_lock(ctx: Ctx, key_name: &[u8], write: bool) -> Result<Key, CmdError> {
    let key = Key::open(ctx, key_name, write)
        .ok_or_else(|| CmdError("ERR could not open the lock's key".into()))?;
    if key.kind() == Kind::Other {
        return Err(wrong_type());
    }
    Ok(key)
}

/// Whether the lock `key` is held by `token`. The length is compared first: it is known
/// without reading the value, and reading it re-encodes a short or numeric value.
pub fn holds(key: &Key, token: &[u8]) -> bool {
    key.kind() == Kind::String && key.string_len() == token.len() && key.value() == token
}

/// Make `token` the owner of the lock until `expires_at` (absolute ms).
pub fn write_owner(ctx: Ctx, key: &mut Key, key_name: &[u8], token: &[u8], expires_at: i64) {
    key.set(token);
    key.set_expires_at(expires_at);
    ctx.replicate_set_pxat(key_name, token, expires_at);
    key.touched(
        ctx,
        &[
            (EventClass::String, c"set"),
            (EventClass::Generic, c"expire"),
        ],
    );
}

/// Move the lease's end of the held lock to `expires_at` (absolute ms).
pub fn write_expiry(ctx: Ctx, key: &mut Key, key_name: &[u8], expires_at: i64) {
    key.set_expires_at(expires_at);
    ctx.replicate_pexpireat(key_name, expires_at);
    key.touched(ctx, &[(EventClass::Generic, c"expire")]);
}

/// Delete the lock key if it exists.
pub fn delete(ctx: Ctx, key: &mut Key, key_name: &[u8]) -> bool {
    if key.kind() == Kind::Empty {
        return false;
    }
    key.delete();
    ctx.replicate_del(key_name);
    key.touched(ctx, &[(EventClass::Generic, c"del")]);
    true
}

/// `lock-fence:<name>`'s `fence` field as stored (None: no counter), as `HGET` reads it
/// (`WRONGTYPE` for a key of another type).
pub fn read_fence(ctx: Ctx, name: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
    ctx.hget(&fence_key(name), c"fence")
}

/// `HSET lock-fence:<name> fence <fence> token <token>`: the last fence issued for `name` and
/// whom it went to, run and replicated as that core command.
pub fn write_fence(ctx: Ctx, name: &[u8], fence: i64, token: &[u8]) -> Result<(), CmdError> {
    let fence = fence.to_string();
    ctx.hset2(
        &fence_key(name),
        [(c"fence", fence.as_bytes()), (c"token", token)],
    )
}

/// Wake python-redis-lock's waiters exactly as its release script does:
/// `DEL lock-signal:<n>`, `LPUSH lock-signal:<n> 1`, `PEXPIRE lock-signal:<n> 1000`.
/// When the list already holds its one element (a signal nobody took yet, so nobody is blocked
/// on it), the same end state needs only the new expiry. A key of another type is not
/// python-redis-lock's and is left alone.
///
/// In cluster mode, not while the slot migrates and `lock-signal:<name>` is not on this node:
/// it may be on the other one, and a list made here would be a second (and make the
/// `MIGRATE` of it fail). python-redis-lock's waiters then wait out their `BLPOP` timeout.
pub fn signal(ctx: Ctx, name: &[u8], now: i64) {
    let key_name = signal_key(name);
    if !owns(ctx, &key_name) {
        return;
    }
    let Some(mut key) = Key::open(ctx, &key_name, true) else {
        return;
    };
    let at = crate::core::later(now, SIGNAL_TTL_MS);
    let expire = (EventClass::Generic, c"expire");
    match (key.kind(), key.list_len()) {
        (_, Some(1)) => {
            key.set_expires_at(at);
            ctx.replicate_pexpireat(&key_name, at);
            key.touched(ctx, &[expire]);
            return;
        }
        (Kind::Empty, _) => {}
        (_, Some(_)) => {
            key.delete();
            ctx.replicate_del(&key_name);
            key.touched(ctx, &[(EventClass::Generic, c"del")]);
        }
        _ => return,
    }
    if key.push_head(ctx, b"1") {
        ctx.replicate_lpush(&key_name, b"1");
        key.set_expires_at(at);
        ctx.replicate_pexpireat(&key_name, at);
        key.touched(ctx, &[(EventClass::List, c"lpush"), expire]);
    }
}

/// Whether this node may read and write `key` of a lock as its one true copy: outside cluster
/// mode always; in cluster mode where the key is here, or where the server would serve it
/// (`Ctx::serves_here`). Not while a slot migrates and the key is not here: it may be on the
/// other node, and a copy made here would be a second one (and make `MIGRATE` fail on it).
pub fn owns(ctx: Ctx, key: &[u8]) -> bool {
    !ctx.in_cluster()
        || Key::open(ctx, key, false).is_some_and(|k| k.kind() != Kind::Empty)
        || ctx.serves_here(key)
}

/// Whether a signal for `name` is waiting to be taken (someone, e.g. python-redis-lock's own
/// release, has just signalled).
pub fn signal_pending(ctx: Ctx, name: &[u8]) -> bool {
    Key::open(ctx, &signal_key(name), false).is_some_and(|k| k.list_len().is_some_and(|n| n > 0))
}

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of its first non-empty
/// `{hashtag}`, modulo 16384. (`RedisModule_ClusterKeySlot` only exists from Redis 7.4.)
pub fn slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & 16383
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// In cluster mode, the node that owns `name`'s slot must own the lock's keys too.
pub fn same_slot(name: &[u8]) -> bool {
    let s = slot(name);
    slot(&lock_key(name)) == s && slot(&signal_key(name)) == s && slot(&fence_key(name)) == s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_short_and_long() {
        assert_eq!(&*lock_key(b"orders"), b"lock:orders");
        assert_eq!(&*signal_key(b""), b"lock-signal:");
        let long = vec![b'x'; 500];
        assert_eq!(&*lock_key(&long), [LOCK_PREFIX, &long].concat().as_slice());
        let edge = vec![b'y'; INLINE - LOCK_PREFIX.len()];
        assert!(matches!(lock_key(&edge), KeyName::Inline(..)));
        assert_eq!(&*lock_key(&edge), [LOCK_PREFIX, &edge].concat().as_slice());
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on a real cluster.
        for (key, want) in [
            ("foo", 12182),
            ("bar", 5061),
            ("{user1000}.following", 3443),
            ("{user1000}.followers", 3443),
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
            ("foo{bar}{zap}", 5061),
            ("", 0),
        ] {
            assert_eq!(slot(key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn only_names_with_a_hashtag_keep_their_keys_together() {
        assert!(same_slot(b"{orders}"));
        assert!(same_slot(b"app:{orders}:eu"));
        assert!(!same_slot(b"orders"));
        assert!(!same_slot(b"{}orders"));
    }
}
