//! The module context (`Ctx`): the running command's, a callback's or a timer's. Context
//! flags, the clock, replies, replication as plain core commands, and a scan of the
//! database's key names (ACL checks: `acl`).

use std::ffi::{c_void, CString};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use redis_module::raw;

use super::{log, string_bytes, CmdError, CmdResult, Reply, ERR, OK};

/// Whether the server runs in cluster mode: read once at load (a server never enters or
/// leaves it while running; the context flags are not cheap, they include the memory state).
static CLUSTER: OnceLock<bool> = OnceLock::new();

/// In cluster mode, a detached context (made at load) for `Ctx::serves_here`.
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(null_mut());

/// At load: note whether the server runs in cluster mode, and make the detached context.
pub(super) fn cluster_init(ctx: Ctx) {
    let cluster = *CLUSTER.get_or_init(|| ctx.flags() & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0);
    if cluster && DETACHED.load(Ordering::Relaxed).is_null() {
        let detached = api!(RedisModule_GetDetachedThreadSafeContext(ctx.0) else null_mut());
        DETACHED.store(detached, Ordering::Relaxed);
    }
}

/// At unload: free the detached context.
pub fn cluster_unload() {
    let detached = DETACHED.swap(null_mut(), Ordering::Relaxed);
    if !detached.is_null() {
        api!(RedisModule_FreeThreadSafeContext(detached) else ());
    }
}

/// Whether the server runs in cluster mode (false until the module is loaded).
pub fn cluster_mode() -> bool {
    CLUSTER.get().copied().unwrap_or(false)
}

/// A module context: the running command's, a callback's or a timer's.
#[derive(Clone, Copy)]
pub struct Ctx(pub(super) *mut raw::RedisModuleCtx);

impl Ctx {
    /// The context the `redis-module` crate gives at load.
    pub fn of(ctx: &redis_module::Context) -> Ctx {
        Ctx(ctx.ctx)
    }

    /// Wall-clock time in milliseconds, the clock Redis compares expiry times with.
    pub fn now_ms() -> i64 {
        api!(RedisModule_Milliseconds() else 0)
    }

    fn flags(self) -> u32 {
        api!(RedisModule_GetContextFlags(self.0) else 0) as u32
    }

    /// A primary that is not loading: the only state in which rlock writes keys.
    pub fn may_write(self) -> bool {
        let f = self.flags();
        f & raw::REDISMODULE_CTX_FLAGS_MASTER != 0 && f & raw::REDISMODULE_CTX_FLAGS_LOADING == 0
    }

    /// Whether the running command may block its client (not in MULTI, a script or a function).
    pub fn may_block(self) -> bool {
        let f = self.flags();
        let deny = raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING
            | raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA;
        f & deny == 0
    }

    /// Whether the running command was called by a script or a function (`EVAL`, `FCALL`):
    /// its client is then the script engine's, not the caller's.
    pub fn in_script(self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_LUA != 0
    }

    /// Whether the server runs in cluster mode (see `cluster_mode`).
    pub fn in_cluster(self) -> bool {
        cluster_mode()
    }

    /// Whether the server would run a command on `key` here, for a client that did not send
    /// `ASKING`: the slot is this node's and stable, or it is migrating away and `key` is still
    /// here. (`RedisModule_Call` applies the cluster's own routing, `getNodeByQuery`, to a
    /// module's calls, from a detached context whose client never has `ASKING`.) Always true
    /// outside cluster mode. Not from inside a keyspace notification.
    pub fn serves_here(self, key: &[u8]) -> bool {
        if !cluster_mode() {
            return true;
        }
        let detached = DETACHED.load(Ordering::Relaxed);
        if detached.is_null() {
            return false;
        }
        let reply = api!(RedisModule_Call(detached, c"EXISTS".as_ptr(), c"b".as_ptr(), key.as_ptr(), key.len()) else null_mut());
        if reply.is_null() {
            return false; // redirected (ASK, MOVED), or the cluster is down
        }
        api!(RedisModule_FreeCallReply(reply) else ());
        true
    }

    pub fn db(self) -> i32 {
        api!(RedisModule_GetSelectedDb(self.0) else 0)
    }

    /// Run `f` with database `db` selected, then select back the database selected before,
    /// on every path out of `f` (a panic included). This is the only way the rest of the crate
    /// can select a database, so no module code path changes a caller's selected database:
    /// on Valkey 8.1 a post-notification job's context is the client whose command raised the
    /// event (the `EXEC` or `EVAL` caller), not a temporary one. None if `db` cannot be
    /// selected (nothing ran).
    pub fn in_db<R>(self, db: i32, f: impl FnOnce(Ctx) -> R) -> Option<R> {
        struct Back(Ctx, i32);
        impl Drop for Back {
            fn drop(&mut self) {
                if self.0.db() != self.1 {
                    self.0.select_db(self.1);
                }
            }
        }
        let home = self.db();
        if home != db && !self.select_db(db) {
            return None;
        }
        let _back = Back(self, home);
        Some(f(self))
    }

    /// Select `db` and stay there: only for this layer's own restoring (`in_db`, and putting
    /// back a client the server moved, `subscribe::home`).
    pub(super) fn select_db(self, db: i32) -> bool {
        api!(RedisModule_SelectDb(self.0, db) else ERR) == OK
    }

    /// Whether writes are paused (`CLIENT PAUSE WRITE|ALL`, `FAILOVER` waiting for its replica):
    /// the server then keeps keys past their time in its dictionary and must not be written.
    pub fn writes_paused(self) -> bool {
        api!(RedisModule_AvoidReplicaTraffic() else 0) != 0
    }

    /// The server's id of the calling client (`CLIENT ID`).
    pub fn client_id(self) -> u64 {
        api!(RedisModule_GetClientId(self.0) else 0)
    }

    pub fn log_warning(self, msg: &str) {
        log(self.0, "warning", msg);
    }

    /// A warning in the server's log, from where no context is at hand (a command filter).
    pub fn log_warning_anywhere(msg: &str) {
        log(null_mut(), "warning", msg);
    }

    pub fn log_notice(self, msg: &str) {
        log(self.0, "notice", msg);
    }

    pub(super) fn reply(self, reply: CmdResult) {
        let c = self.0;
        match reply {
            Ok(Reply::Array(items)) => {
                let len = std::ffi::c_long::try_from(items.len()).unwrap_or(0);
                api!(RedisModule_ReplyWithArray(c, len) else ERR);
                for item in items {
                    self.reply(Ok(item));
                }
                OK
            }
            Ok(Reply::Map(fields)) => {
                let len = std::ffi::c_long::try_from(fields.len()).unwrap_or(0);
                api!(RedisModule_ReplyWithMap(c, len) else ERR);
                for (field, value) in fields {
                    api!(RedisModule_ReplyWithStringBuffer(c, field.as_ptr().cast(), field.len()) else ERR);
                    self.reply(Ok(value));
                }
                OK
            }
            Ok(Reply::Ok) => api!(RedisModule_ReplyWithSimpleString(c, c"OK".as_ptr()) else ERR),
            Ok(Reply::Nil) => api!(RedisModule_ReplyWithNull(c) else ERR),
            Ok(Reply::Int(n)) => api!(RedisModule_ReplyWithLongLong(c, n) else ERR),
            Ok(Reply::Bulk(b)) => {
                api!(RedisModule_ReplyWithStringBuffer(c, b.as_ptr().cast(), b.len()) else ERR)
            }
            Ok(Reply::Blocked) => OK,
            Ok(Reply::Error(text)) | Err(CmdError(text)) => {
                let text = CString::new(text.replace(['\0', '\r', '\n'], " ")).unwrap_or_default();
                api!(RedisModule_ReplyWithError(c, text.as_ptr()) else ERR)
            }
        };
    }

    // ---- replication: plain core commands with absolute times ----

    /// `SET key value PXAT at`
    pub fn replicate_set_pxat(self, key: &[u8], value: &[u8], at: i64) {
        api!(RedisModule_Replicate(self.0, c"SET".as_ptr(), c"bbcl".as_ptr(),
            key.as_ptr(), key.len(), value.as_ptr(), value.len(), c"PXAT".as_ptr(), at) else ERR);
    }

    /// `PEXPIREAT key at`
    pub fn replicate_pexpireat(self, key: &[u8], at: i64) {
        api!(RedisModule_Replicate(self.0, c"PEXPIREAT".as_ptr(), c"bl".as_ptr(),
            key.as_ptr(), key.len(), at) else ERR);
    }

    /// `DEL key`
    pub fn replicate_del(self, key: &[u8]) {
        api!(RedisModule_Replicate(self.0, c"DEL".as_ptr(), c"b".as_ptr(), key.as_ptr(), key.len()) else ERR);
    }

    /// `LPUSH key value`
    pub fn replicate_lpush(self, key: &[u8], value: &[u8]) {
        api!(RedisModule_Replicate(self.0, c"LPUSH".as_ptr(), c"bb".as_ptr(),
            key.as_ptr(), key.len(), value.as_ptr(), value.len()) else ERR);
    }

    /// Every key name of the selected database that starts with `prefix`.
    pub fn keys_with_prefix(self, prefix: &[u8]) -> Vec<Vec<u8>> {
        struct Found<'a> {
            prefix: &'a [u8],
            names: Vec<Vec<u8>>,
        }
        unsafe extern "C" fn each(
            _ctx: *mut raw::RedisModuleCtx,
            name: *mut raw::RedisModuleString,
            _key: *mut raw::RedisModuleKey,
            data: *mut c_void,
        ) {
            let found = unsafe { &mut *(data as *mut Found) };
            let name = string_bytes(name);
            if name.starts_with(found.prefix) {
                found.names.push(name.to_vec());
            }
        }
        let mut found = Found {
            prefix,
            names: Vec::new(),
        };
        let cursor = api!(RedisModule_ScanCursorCreate() else null_mut());
        if cursor.is_null() {
            return found.names;
        }
        let data = &mut found as *mut Found as *mut c_void;
        while api!(RedisModule_Scan(self.0, cursor, Some(each), data) else 0) != 0 {}
        api!(RedisModule_ScanCursorDestroy(cursor) else ());
        found.names
    }
}
