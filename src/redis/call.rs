//! Commands run through the server itself (`RedisModule_Call`), where doing it by hand would
//! get something wrong: `GET` leaves a value's encoding alone, `CLIENT UNBLOCK` is the server's,
//! `HSET` is replicated and announced as itself.

use std::ffi::CStr;
use std::ptr::{null, null_mut};

use redis_module::raw;

use super::{CmdError, CmdResult, Ctx, Reply, ERR, OK};

impl Ctx {
    /// `GET key` through the server itself: the value as it is, without re-encoding it (reading
    /// through `StringDMA` turns an int or embstr value into a raw string). `Ok(None)` for a
    /// missing key; a key of another type is the server's `WRONGTYPE` error.
    pub fn get(self, key: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
        let reply = api!(RedisModule_Call(self.0, c"GET".as_ptr(), c"b".as_ptr(), key.as_ptr(), key.len()) else null_mut());
        CallReply::of(reply).string_or_nil()
    }

    /// `HGET key field` through the server itself: `Ok(None)` for a missing key or field; a
    /// key of another type is the server's `WRONGTYPE` error.
    pub fn hget(self, key: &[u8], field: &CStr) -> Result<Option<Vec<u8>>, CmdError> {
        let reply = api!(RedisModule_Call(self.0, c"HGET".as_ptr(), c"bc".as_ptr(),
            key.as_ptr(), key.len(), field.as_ptr()) else null_mut());
        CallReply::of(reply).string_or_nil()
    }

    /// `HSET key field value [field value]`, run and replicated as the core command.
    pub fn hset2(self, key: &[u8], fields: [(&CStr, &[u8]); 2]) -> Result<(), CmdError> {
        let [(f1, v1), (f2, v2)] = fields;
        let reply = api!(RedisModule_Call(self.0, c"HSET".as_ptr(), c"!bcbcb".as_ptr(),
            key.as_ptr(), key.len(), f1.as_ptr(), v1.as_ptr(), v1.len(),
            f2.as_ptr(), v2.as_ptr(), v2.len()) else null_mut());
        CallReply::of(reply).integer().map(|_| ())
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` as the server itself runs it.
    pub fn client_unblock(self, id: i64, error: bool) -> CmdResult {
        let how = if error { c"ERROR" } else { c"TIMEOUT" };
        let reply = api!(RedisModule_Call(self.0, c"CLIENT".as_ptr(), c"clc".as_ptr(),
            c"UNBLOCK".as_ptr(), id as std::ffi::c_longlong, how.as_ptr()) else null_mut());
        CallReply::of(reply).integer().map(Reply::Int)
    }
}

/// Whether the client with server id `id` exists and is blocked (in a blocking command, or
/// held back by `CLIENT PAUSE`).
pub fn client_blocked(id: u64) -> bool {
    client_info(id)
        .is_some_and(|info| info.flags & u64::from(raw::REDISMODULE_CLIENTINFO_FLAG_BLOCKED) != 0)
}

/// The ids of the clients blocked in one of `commands` (lowercase names), from `CLIENT LIST`.
pub fn clients_blocked_in(ctx: Ctx, commands: &[&str]) -> Option<Vec<u64>> {
    let reply = api!(RedisModule_Call(ctx.0, c"CLIENT".as_ptr(), c"c".as_ptr(), c"LIST".as_ptr()) else null_mut());
    let reply = CallReply::of(reply);
    let list = reply.string_or_nil().ok()??;
    let list = String::from_utf8_lossy(&list);
    let ids = list
        .lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            };
            let blocked = field("flags")?.contains('b');
            let waiting = commands.contains(&field("cmd")?);
            (blocked && waiting).then(|| field("id")?.parse().ok())?
        })
        .collect();
    Some(ids)
}

/// How many clients may still point at one of the module's commands named `prefix...`
/// (lowercase), from `CLIENT LIST`: those whose last command is one (`cmd=`), and those
/// queueing a transaction (`MULTI`, flag `x`, not running its `EXEC`), which may hold one. The
/// server keeps such pointers after `MODULE UNLOAD` (redis/redis#10259): a `CLIENT LIST` or an
/// `EXEC` would then read freed memory. None if the list cannot be read.
pub fn clients_pointing_at(ctx: Ctx, prefix: &str) -> Option<usize> {
    let reply = api!(RedisModule_Call(ctx.0, c"CLIENT".as_ptr(), c"c".as_ptr(), c"LIST".as_ptr()) else null_mut());
    let reply = CallReply::of(reply);
    let list = reply.string_or_nil().ok()??;
    let list = String::from_utf8_lossy(&list);
    let count = list
        .lines()
        .filter(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or("")
            };
            let cmd = field("cmd").to_ascii_lowercase();
            cmd.starts_with(prefix) || (field("flags").contains('x') && cmd != "exec")
        })
        .count();
    Some(count)
}

/// What the server says about the client with id `id` (None: no such client, or the API is
/// missing).
pub(super) fn client_info(id: u64) -> Option<raw::RedisModuleClientInfo> {
    let mut info: raw::RedisModuleClientInfo = unsafe { std::mem::zeroed() };
    info.version = 1;
    let found = api!(RedisModule_GetClientInfoById((&mut info as *mut raw::RedisModuleClientInfo).cast(), id) else ERR);
    (found == OK).then_some(info)
}

/// Why `RedisModule_Call` gave no reply (read from `errno` right after it). In cluster mode
/// `EPERM` is its routing check: the key is not served here for this caller now (its slot
/// migrates, or is another node's): `TRYAGAIN`, as the server tells a client of a slot in flux.
fn refused(errno: i32) -> CmdError {
    use std::io::ErrorKind;
    CmdError(match std::io::Error::from_raw_os_error(errno).kind() {
        // EPERM (EACCES, the other one, is an ACL refusal, asked for with the `C` flag only).
        ErrorKind::PermissionDenied => {
            "TRYAGAIN the key is not served by this node now (its cluster slot is moving)".into()
        }
        ErrorKind::NetworkDown => "CLUSTERDOWN the cluster is down".into(),
        _ => "ERR the server refused the call".into(),
    })
}

/// A reply of `RedisModule_Call`, freed on drop; with `errno` as the call left it (why there
/// is no reply, when there is none).
struct CallReply(*mut raw::RedisModuleCallReply, i32);

impl CallReply {
    /// Right after `RedisModule_Call`, before anything else can change `errno`.
    fn of(reply: *mut raw::RedisModuleCallReply) -> CallReply {
        let errno = if reply.is_null() {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        CallReply(reply, errno)
    }

    fn kind(&self) -> isize {
        if self.0.is_null() {
            return raw::REDISMODULE_REPLY_UNKNOWN;
        }
        api!(RedisModule_CallReplyType(self.0) else -1) as isize
    }

    fn bytes(&self) -> Vec<u8> {
        let mut len = 0usize;
        let p = api!(RedisModule_CallReplyStringPtr(self.0, &mut len) else null());
        if p.is_null() {
            return Vec::new();
        }
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec()
    }

    fn error(&self) -> CmdError {
        if self.0.is_null() {
            return refused(self.1);
        }
        let text = String::from_utf8_lossy(&self.bytes()).into_owned();
        CmdError(if text.is_empty() {
            "ERR the server refused the call".into()
        } else {
            text
        })
    }

    fn string_or_nil(&self) -> Result<Option<Vec<u8>>, CmdError> {
        match self.kind() {
            raw::REDISMODULE_REPLY_STRING => Ok(Some(self.bytes())),
            raw::REDISMODULE_REPLY_NULL => Ok(None),
            _ => Err(self.error()),
        }
    }

    fn integer(&self) -> Result<i64, CmdError> {
        match self.kind() {
            raw::REDISMODULE_REPLY_INTEGER => Ok(api!(RedisModule_CallReplyInteger(self.0) else 0)),
            _ => Err(self.error()),
        }
    }
}

impl Drop for CallReply {
    fn drop(&mut self) {
        if !self.0.is_null() {
            api!(RedisModule_FreeCallReply(self.0) else ());
        }
    }
}
