//! Keys opened through the low-level key API (`Key`), and announcing writes to them.

use std::ffi::{c_int, CStr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::raw;

use super::{Ctx, RString, ERR, OK};

/// What a key holds.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Kind {
    Empty,
    String,
    Other,
}

/// An open key, closed on drop. Writes through it are not propagated and tell nobody: the
/// caller replicates them and calls `touched`.
pub struct Key {
    key: *mut raw::RedisModuleKey,
    name: RString,
}

/// Set while the module announces its own writes: its keyspace callback ignores them.
pub(super) static ANNOUNCING: AtomicBool = AtomicBool::new(false);

/// The keyspace event class of an event rlock announces.
#[derive(Clone, Copy)]
pub enum EventClass {
    Generic,
    String,
    List,
}

impl Key {
    /// Open `prefix` + `name` for reading (`write == false`) or reading and writing.
    /// Opening for write on a primary deletes a key whose time is up, as Redis does.
    pub fn open(ctx: Ctx, full_name: &[u8], write: bool) -> Option<Key> {
        let name = RString::new(ctx, full_name)?;
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ
        };
        let key = api!(RedisModule_OpenKey(ctx.0, name.0, mode as c_int) else null_mut());
        // Opening a missing key for reading gives NULL, which the key calls treat as empty.
        (!write || !key.is_null()).then_some(Key { key, name })
    }

    /// Announce writes to this key as the core command would: `events` as keyspace
    /// notifications, then the key as modified (`WATCH` aborts, client-side caches drop it).
    pub fn touched(&self, ctx: Ctx, events: &[(EventClass, &CStr)]) {
        ANNOUNCING.store(true, Ordering::Relaxed);
        for (class, event) in events {
            let class = match class {
                EventClass::Generic => raw::REDISMODULE_NOTIFY_GENERIC,
                EventClass::String => raw::REDISMODULE_NOTIFY_STRING,
                EventClass::List => raw::REDISMODULE_NOTIFY_LIST,
            };
            api!(RedisModule_NotifyKeyspaceEvent(ctx.0, class, event.as_ptr(), self.name.0) else ERR);
        }
        ANNOUNCING.store(false, Ordering::Relaxed);
        api!(RedisModule_SignalModifiedKey(ctx.0, self.name.0) else ERR);
    }

    /// The length of a string value, without reading (or re-encoding) it.
    pub fn string_len(&self) -> usize {
        if self.key.is_null() {
            return 0;
        }
        api!(RedisModule_ValueLength(self.key) else 0)
    }

    pub fn kind(&self) -> Kind {
        match api!(RedisModule_KeyType(self.key) else 0) as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => Kind::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
            _ => Kind::Other,
        }
    }

    /// The value of a string key (empty for an empty key).
    pub fn value(&self) -> &[u8] {
        if self.key.is_null() {
            return &[];
        }
        let mut len = 0usize;
        let p = api!(RedisModule_StringDMA(self.key, &mut len, raw::REDISMODULE_READ as c_int) else null_mut());
        if p.is_null() || len == 0 {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(p.cast(), len) }
    }

    /// Replace the value with `bytes`, keeping the key a string.
    pub fn set(&mut self, bytes: &[u8]) -> bool {
        if api!(RedisModule_StringTruncate(self.key, bytes.len()) else ERR) != OK {
            return false;
        }
        let mut len = 0usize;
        let p = api!(RedisModule_StringDMA(self.key, &mut len, raw::REDISMODULE_WRITE as c_int) else null_mut());
        if p.is_null() || len != bytes.len() {
            return false;
        }
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), len) };
        true
    }

    /// The absolute expiry time in ms, or `None` for a key that never expires.
    pub fn expires_at(&self) -> Option<i64> {
        if self.key.is_null() {
            return None;
        }
        let at = api!(RedisModule_GetAbsExpire(self.key) else -1);
        (at >= 0).then_some(at)
    }

    pub fn set_expires_at(&mut self, at: i64) -> bool {
        api!(RedisModule_SetAbsExpire(self.key, at) else ERR) == OK
    }

    /// The length of a list key; `None` for any other kind.
    pub fn list_len(&self) -> Option<usize> {
        let is_list =
            api!(RedisModule_KeyType(self.key) else 0) as isize == raw::REDISMODULE_KEYTYPE_LIST;
        is_list.then(|| api!(RedisModule_ValueLength(self.key) else 0))
    }

    pub fn delete(&mut self) -> bool {
        api!(RedisModule_DeleteKey(self.key) else ERR) == OK
    }

    /// LPUSH `value` onto a list key (creating it). Wakes clients blocked on it (BLPOP).
    pub fn push_head(&mut self, ctx: Ctx, value: &[u8]) -> bool {
        let Some(v) = RString::new(ctx, value) else {
            return false;
        };
        api!(RedisModule_ListPush(self.key, raw::REDISMODULE_LIST_HEAD as c_int, v.0) else ERR)
            == OK
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        api!(RedisModule_CloseKey(self.key) else ());
    }
}
