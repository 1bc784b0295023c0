//! The raw Redis module API calls the safe crate does not wrap the way rlock needs them.
//! Every `unsafe` block of the crate lives in this file.
//!
//! Rules kept here: every entry point from Redis (`extern "C" fn`) catches panics, so a bug
//! becomes an error reply or a log line instead of taking the server down; strings and keys
//! opened here are freed by `Drop`; API functions that only newer servers have are looked up
//! as `Option`s and treated as absent when `None`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, Ordering};

use redis_module::raw;

/// A blocked client, by the address of its `RedisModuleBlockedClient`.
pub type Handle = usize;

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// Calls an API function pointer; a missing one (older server) yields `$missing`.
macro_rules! api {
    ($f:ident ( $($arg:expr),* ) else $missing:expr) => {
        match unsafe { raw::$f } {
            Some(f) => unsafe { f($($arg),*) },
            None => $missing,
        }
    };
}

/// What a command handler answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    /// The client was blocked; the reply comes later from a callback.
    Blocked,
    /// An error reply that is the command's answer, not a failure (e.g. to a waiter that
    /// `CLIENT UNBLOCK ... ERROR` ended).
    Error(String),
}

/// An error reply, with its Redis prefix (`ERR ...`, `WRONGTYPE ...`, `NOPERM ...`).
#[derive(Debug, PartialEq, Eq)]
pub struct CmdError(pub String);

pub type CmdResult = Result<Reply, CmdError>;

/// A module context: the running command's, a callback's or a timer's.
#[derive(Clone, Copy)]
pub struct Ctx(*mut raw::RedisModuleCtx);

impl Ctx {
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

    /// Whether the server runs in cluster mode.
    pub fn in_cluster(self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
    }

    pub fn db(self) -> i32 {
        api!(RedisModule_GetSelectedDb(self.0) else 0)
    }

    pub fn select_db(self, db: i32) -> bool {
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

    /// `GET key` through the server itself: the value as it is, without re-encoding it (reading
    /// through `StringDMA` turns an int or embstr value into a raw string). `Ok(None)` for a
    /// missing key; a key of another type is the server's `WRONGTYPE` error.
    pub fn get(self, key: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
        let reply = api!(RedisModule_Call(self.0, c"GET".as_ptr(), c"b".as_ptr(), key.as_ptr(), key.len()) else null_mut());
        CallReply(reply).string_or_nil()
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` as the server itself runs it.
    pub fn client_unblock(self, id: i64, error: bool) -> CmdResult {
        let how = if error { c"ERROR" } else { c"TIMEOUT" };
        let reply = api!(RedisModule_Call(self.0, c"CLIENT".as_ptr(), c"clc".as_ptr(),
            c"UNBLOCK".as_ptr(), id as std::ffi::c_longlong, how.as_ptr()) else null_mut());
        CallReply(reply).integer().map(Reply::Int)
    }

    pub fn log_warning(self, msg: &str) {
        log(self.0, "warning", msg);
    }

    fn reply(self, reply: CmdResult) {
        let c = self.0;
        match reply {
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

    // ---- blocked clients ----

    /// Block the calling client with no time limit of Redis's own (rlock ends waits itself).
    /// Its reply comes from `wake::on_reply` after `unblock`; `wake::on_disconnect` hears of
    /// it going away.
    ///
    /// No timeout callback: so the server never ends the wait by itself, and its own
    /// `CLIENT UNBLOCK` leaves the client alone (replies 0). The server would otherwise race
    /// the module's own unblock in one event-loop pass: two replies to one command on 7.0, an
    /// abort on 7.2.6. `CLIENT UNBLOCK` of a waiter is the module's instead (see `filter_cb`).
    pub fn block(self) -> Option<Handle> {
        let timeout_ms: i64 = 0;
        let bc = api!(RedisModule_BlockClient(self.0, Some(reply_cb), None, None, timeout_ms) else null_mut());
        if bc.is_null() {
            return None;
        }
        api!(RedisModule_SetDisconnectCallback(bc, Some(disconnect_cb)) else ());
        Some(bc as Handle)
    }

    /// In a reply or timeout callback: which blocked client this is.
    pub fn blocked_handle(self) -> Handle {
        api!(RedisModule_GetBlockedClientHandle(self.0) else null_mut()) as Handle
    }

    /// In a reply callback: why the client was unblocked.
    pub fn blocked_outcome(self) -> Unblocked {
        let data = api!(RedisModule_GetBlockedClientPrivateData(self.0) else null_mut());
        if data == Unblocked::Granted.tag() {
            Unblocked::Granted
        } else if data == Unblocked::Error.tag() {
            Unblocked::Error
        } else {
            Unblocked::Nil
        }
    }

    // ---- timers ----

    /// Run `wake::on_timer` after `ms` milliseconds.
    pub fn create_timer(self, ms: i64) -> u64 {
        api!(RedisModule_CreateTimer(self.0, ms.max(0), Some(timer_cb), null_mut()) else 0)
    }

    pub fn stop_timer(self, id: u64) {
        let mut data: *mut c_void = null_mut();
        api!(RedisModule_StopTimer(self.0, id, &mut data) else ERR);
    }

    // ---- ACL ----

    /// Whether the calling user may use `keys` (read them, and write them if `write`).
    pub fn may_access(self, keys: &[&[u8]], write: bool) -> bool {
        let Some(check) = (unsafe { raw::RedisModule_ACLCheckKeyPermissions }) else {
            return true;
        };
        let mut flags = raw::REDISMODULE_CMD_KEY_ACCESS;
        if write {
            flags |= raw::REDISMODULE_CMD_KEY_INSERT
                | raw::REDISMODULE_CMD_KEY_DELETE
                | raw::REDISMODULE_CMD_KEY_UPDATE;
        }
        self.user_may(|user| {
            keys.iter().all(|k| {
                RString::new(self, k)
                    .is_some_and(|k| unsafe { check(user, k.0, flags as c_int) } == OK)
            })
        })
    }

    /// Whether the calling user may run the command `args` (e.g. `["FLUSHDB"]`).
    pub fn may_run(self, args: &[&[u8]]) -> bool {
        let Some(check) = (unsafe { raw::RedisModule_ACLCheckCommandPermissions }) else {
            return true;
        };
        let strings: Option<Vec<RString>> = args.iter().map(|a| RString::new(self, a)).collect();
        let Some(strings) = strings else {
            return false;
        };
        let mut argv: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.0).collect();
        self.user_may(|user| unsafe { check(user, argv.as_mut_ptr(), argv.len() as c_int) } == OK)
    }

    /// Ask `allowed` about the calling user. True where the server has no ACL API, and for
    /// the primary's link or the AOF (no user; Redis trusts them). Only inside a command:
    /// timers and callbacks have no user.
    fn user_may(self, allowed: impl FnOnce(*mut raw::RedisModuleUser) -> bool) -> bool {
        let api = unsafe {
            (
                raw::RedisModule_GetCurrentUserName,
                raw::RedisModule_GetModuleUserFromUserName,
                raw::RedisModule_FreeModuleUser,
            )
        };
        let (Some(get_name), Some(get_user), Some(free_user)) = api else {
            return true;
        };
        let name = unsafe { get_name(self.0) };
        if name.is_null() {
            return true;
        }
        let user = unsafe { get_user(name) };
        api!(RedisModule_FreeString(self.0, name) else ());
        if user.is_null() {
            return false;
        }
        let ok = allowed(user);
        unsafe { free_user(user) };
        ok
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

/// Why a blocked client is woken, and so what its reply will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblocked {
    /// Handed the lock: `OK`.
    Granted,
    /// Timed out, or `CLIENT UNBLOCK [TIMEOUT]`: nil.
    Nil,
    /// `CLIENT UNBLOCK ... ERROR`: the server's `-UNBLOCKED` error.
    Error,
}

impl Unblocked {
    /// The private data that carries the outcome to the reply callback.
    fn tag(self) -> *mut c_void {
        static TAGS: [u8; 2] = [1, 2];
        match self {
            Unblocked::Granted => &TAGS[0] as *const u8 as *mut c_void,
            Unblocked::Error => &TAGS[1] as *const u8 as *mut c_void,
            Unblocked::Nil => null_mut(),
        }
    }
}

/// Wake a blocked client; its reply follows from `how`.
pub fn unblock(handle: Handle, how: Unblocked) {
    api!(RedisModule_UnblockClient(handle as *mut raw::RedisModuleBlockedClient, how.tag()) else ERR);
}

/// A reply of `RedisModule_Call`, freed on drop.
struct CallReply(*mut raw::RedisModuleCallReply);

impl CallReply {
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

fn log(ctx: *mut raw::RedisModuleCtx, level: &str, msg: &str) {
    let (Ok(level), Ok(msg)) = (CString::new(level), CString::new(msg.replace('\0', " "))) else {
        return;
    };
    api!(RedisModule_Log(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) else ());
}

fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len = 0usize;
    let p = api!(RedisModule_StringPtrLen(s, &mut len) else null());
    if p.is_null() {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(p.cast(), len) }
}

/// A module string we created and free on drop.
struct RString(*mut raw::RedisModuleString, Ctx);

impl RString {
    fn new(ctx: Ctx, bytes: &[u8]) -> Option<Self> {
        let s = api!(RedisModule_CreateString(ctx.0, bytes.as_ptr().cast(), bytes.len()) else null_mut());
        (!s.is_null()).then_some(RString(s, ctx))
    }
}

impl Drop for RString {
    fn drop(&mut self) {
        api!(RedisModule_FreeString(self.1 .0, self.0) else ());
    }
}

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
static ANNOUNCING: AtomicBool = AtomicBool::new(false);

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

// ---- entry points from Redis ----

/// Run `f` for an entry point, turning a panic into a log line.
fn guard(ctx: *mut raw::RedisModuleCtx, what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log(
            ctx,
            "warning",
            &format!("rlock: internal error in {what}; state left as it was"),
        );
    }
}

/// The body of every command entry point: decode the arguments, run the handler, reply.
/// Only the `extern "C"` entry points that Redis calls with its own `argv` call this.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn run_command(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: fn(Ctx, &[&[u8]]) -> CmdResult,
) -> c_int {
    let raw_args: &[*mut raw::RedisModuleString] = if argv.is_null() || argc <= 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(argv, argc as usize) }
    };
    // No command takes more than 6 arguments: more are an arity error, and no allocation.
    let mut buf: [&[u8]; 8] = [&[]; 8];
    let n = raw_args.len().min(buf.len());
    for (slot, arg) in buf.iter_mut().zip(raw_args) {
        *slot = string_bytes(*arg);
    }
    let args: &[&[u8]] = if raw_args.len() > buf.len() {
        &buf[..1]
    } else {
        &buf[..n]
    };
    let c = Ctx(ctx);
    let reply = catch_unwind(AssertUnwindSafe(|| handler(c, args))).unwrap_or_else(|_| {
        Err(CmdError(
            "ERR rlock internal error; nothing was changed".into(),
        ))
    });
    c.reply(reply);
    OK
}

/// Declare an `extern "C"` command entry point running `handler`.
#[macro_export]
macro_rules! entry_point {
    ($handler:path) => {{
        extern "C" fn entry(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::ffi::c_int,
        ) -> std::ffi::c_int {
            $crate::ffi::run_command(ctx, argv, argc, $handler)
        }
        entry as extern "C" fn(_, _, _) -> _
    }};
}

pub type EntryPoint =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// One command's registration and its `COMMAND DOCS` / `COMMAND INFO` entry.
pub struct CommandSpec {
    pub name: &'static CStr,
    pub entry: EntryPoint,
    pub flags: &'static CStr,
    /// Redis arity: positive = exact, negative = at least.
    pub arity: c_int,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    /// Whether argument 1 is the lock's name (routed in cluster mode, not checked by ACL).
    pub takes_name: bool,
    /// Writes through the name (`RW`) or only reads (`RO`).
    pub writes: bool,
    /// ACL categories, where the server can set them (7.2+).
    pub acl_categories: Option<&'static CStr>,
    /// (name, type, token, optional) of each argument after the command name.
    pub args: &'static [(&'static CStr, ArgType, Option<&'static CStr>, bool)],
}

#[derive(Clone, Copy)]
pub enum ArgType {
    Key,
    String,
    Integer,
}

/// Register a command. Names route like keys (a key spec flagged NOT_KEY on argument 1), so
/// cluster mode sends the command to the node of `name`'s slot while ACL leaves the real keys
/// (`lock:<name>`, `lock-signal:<name>`) to the command's own check.
pub fn create_command(ctx: &redis_module::Context, spec: &CommandSpec) -> bool {
    let ctx = ctx.ctx;
    let (first, last) = if spec.takes_name { (1, 1) } else { (0, 0) };
    let created = api!(RedisModule_CreateCommand(ctx, spec.name.as_ptr(), Some(spec.entry),
        spec.flags.as_ptr(), first, last, first) else ERR);
    if created != OK {
        return false;
    }
    if let (Some(categories), Some(set_categories)) = (spec.acl_categories, unsafe {
        raw::RedisModule_SetCommandACLCategories
    }) {
        let cmd = api!(RedisModule_GetCommand(ctx, spec.name.as_ptr()) else null_mut());
        if !cmd.is_null() {
            unsafe { set_categories(cmd, categories.as_ptr()) };
        }
    }
    let Some(set_info) = (unsafe { raw::RedisModule_SetCommandInfo }) else {
        return true; // older server: the command works, only without docs
    };
    let cmd = api!(RedisModule_GetCommand(ctx, spec.name.as_ptr()) else null_mut());
    if cmd.is_null() {
        return false;
    }
    // Redis copies everything it keeps from these structures during the call.
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    let mut key_specs: Vec<raw::RedisModuleCommandKeySpec> = Vec::new();
    if spec.takes_name {
        let mut ks: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
        ks.notes =
            c"the lock's name; the command itself touches lock:<name> and lock-signal:<name>"
                .as_ptr();
        let access = if spec.writes {
            raw::REDISMODULE_CMD_KEY_RW
        } else {
            raw::REDISMODULE_CMD_KEY_RO
        };
        ks.flags = (access | raw::REDISMODULE_CMD_KEY_NOT_KEY) as u64;
        ks.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        ks.bs.index.pos = 1;
        ks.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        ks.fk.range.lastkey = 0;
        ks.fk.range.keystep = 1;
        ks.fk.range.limit = 0;
        key_specs.push(ks);
        key_specs.push(unsafe { std::mem::zeroed() });
    }
    let mut args: Vec<raw::RedisModuleCommandArg> = spec
        .args
        .iter()
        .map(|(name, ty, token, optional)| {
            let mut a: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
            a.name = name.as_ptr();
            a.type_ = match ty {
                ArgType::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            };
            a.key_spec_index = if matches!(ty, ArgType::Key) { 0 } else { -1 };
            a.token = token.map_or(null(), |t| t.as_ptr());
            a.flags = if *optional {
                raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
            } else {
                0
            };
            a
        })
        .collect();
    args.push(unsafe { std::mem::zeroed() });
    let mut info: raw::RedisModuleCommandInfo = unsafe { std::mem::zeroed() };
    info.version = &version;
    info.summary = spec.summary.as_ptr();
    info.complexity = spec.complexity.as_ptr();
    info.since = c"0.1.0".as_ptr();
    info.arity = spec.arity;
    info.key_specs = if key_specs.is_empty() {
        null_mut()
    } else {
        key_specs.as_mut_ptr()
    };
    info.args = args.as_mut_ptr();
    unsafe { set_info(cmd, &info) == OK }
}

unsafe extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let c = Ctx(ctx);
    let mut reply = Ok(Reply::Nil);
    guard(ctx, "reply", || reply = crate::wake::on_reply(c));
    c.reply(reply);
    OK
}

unsafe extern "C" fn disconnect_cb(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    // The client is going away, or the server ended the wait itself (a demotion to replica
    // answers every blocked client with an error): it has its answer, or needs none.
    let c = Ctx(ctx);
    guard(ctx, "disconnect", || {
        crate::wake::on_disconnect(c, bc as Handle)
    });
}

unsafe extern "C" fn timer_cb(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard(ctx, "timer", || crate::wake::on_timer(Ctx(ctx)));
}

unsafe extern "C" fn keyspace_cb(
    ctx: *mut raw::RedisModuleCtx,
    type_: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let _ = type_;
    if ANNOUNCING.load(Ordering::Relaxed) {
        return OK; // rlock's own write: nothing to react to
    }
    let event = if event.is_null() {
        &[][..]
    } else {
        unsafe { CStr::from_ptr(event) }.to_bytes()
    };
    guard(ctx, "keyspace event", || {
        crate::wake::on_key_event(Ctx(ctx), string_bytes(key), event)
    });
    OK
}

/// Every command passes here first (about 200 instructions). `CLIENT UNBLOCK <id> [how]` of a
/// client waiting in a LOCK.ACQUIRE becomes `LOCK.UNBLOCK <id> [how]`, which the module serves
/// itself: the server cannot end these waits (no timeout callback), so no unblock of its own
/// can race the module's. Filters run when a command is queued in MULTI too.
unsafe extern "C" fn filter_cb(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let argc = api!(RedisModule_CommandFilterArgsCount(fctx) else 0);
    if !(3..=4).contains(&argc) {
        return;
    }
    let arg =
        |i: c_int| string_bytes(api!(RedisModule_CommandFilterArgGet(fctx, i) else null_mut()));
    if !arg(0).eq_ignore_ascii_case(b"client") || !arg(1).eq_ignore_ascii_case(b"unblock") {
        return;
    }
    // Only an id as the server itself would read it (no sign, no leading zeros): anything
    // else is left to the server's own CLIENT UNBLOCK, which cannot end these waits.
    let id_arg = arg(2);
    if !matches!(id_arg.first(), Some(b'1'..=b'9')) {
        return;
    }
    let Some(id) = std::str::from_utf8(id_arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let mut ours = false;
    guard(null_mut(), "command filter", || {
        ours = crate::wake::is_waiting(id)
    });
    if !ours {
        return;
    }
    let name =
        api!(RedisModule_CreateString(null_mut(), c"LOCK.UNBLOCK".as_ptr(), 12) else null_mut());
    if name.is_null() {
        return;
    }
    // The filter owns the strings it is given.
    api!(RedisModule_CommandFilterArgReplace(fctx, 0, name) else ERR);
    api!(RedisModule_CommandFilterArgDelete(fctx, 1) else ERR);
}

#[repr(C)]
struct FlushInfo {
    version: u64,
    sync: i32,
    dbnum: i32,
}

#[repr(C)]
struct SwapDbInfo {
    version: u64,
    first: i32,
    second: i32,
}

unsafe extern "C" fn server_event_cb(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    sub: u64,
    data: *mut c_void,
) {
    guard(ctx, "server event", || {
        let c = Ctx(ctx);
        match eid.id {
            raw::REDISMODULE_EVENT_FLUSHDB
                if sub == raw::REDISMODULE_SUBEVENT_FLUSHDB_END && !data.is_null() =>
            {
                let db = unsafe { (*(data as *const FlushInfo)).dbnum };
                crate::wake::on_databases_changed(c, (db >= 0).then_some(db));
            }
            raw::REDISMODULE_EVENT_SWAPDB if !data.is_null() => {
                let info = unsafe { &*(data as *const SwapDbInfo) };
                crate::wake::on_databases_changed(c, Some(info.first));
                crate::wake::on_databases_changed(c, Some(info.second));
            }
            raw::REDISMODULE_EVENT_LOADING if sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED => {
                crate::wake::on_databases_changed(c, None);
            }
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => {
                crate::wake::on_databases_changed(c, None)
            }
            _ => {}
        }
    });
}

/// Log at load which of the APIs that differ between servers this one offers, and so which
/// paths rlock takes on it.
pub fn log_features(ctx: &redis_module::Context) {
    let has = |present: bool| if present { "yes" } else { "no (skipped)" };
    let (docs, categories, acl, pause) = unsafe {
        (
            { raw::RedisModule_SetCommandInfo }.is_some(),
            { raw::RedisModule_SetCommandACLCategories }.is_some(),
            { raw::RedisModule_ACLCheckKeyPermissions }.is_some(),
            { raw::RedisModule_AvoidReplicaTraffic }.is_some(),
        )
    };
    log(
        ctx.ctx,
        "notice",
        &format!(
            "rlock: COMMAND DOCS: {}; ACL categories on LOCK.RESETALL/LOCK.UNBLOCK: {}; \
             ACL checks on lock:<name>: {}; writes held back while paused (AvoidReplicaTraffic): {}",
            has(docs),
            has(categories),
            has(acl),
            has(pause)
        ),
    );
}

/// Subscribe to the keyspace events (every class that can end a lock) and the server events
/// (flush, swapdb, loading, role change) that `wake.rs` reacts to; take over `CLIENT UNBLOCK`
/// of waiters; announce modified keys explicitly (`Key::touched`), so that opening a key
/// without writing it changes nothing for `WATCH` or client-side caching.
pub fn subscribe(ctx: &redis_module::Context) -> bool {
    let ctx = ctx.ctx;
    api!(RedisModule_SetModuleOptions(ctx, raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int) else ());
    let filter = api!(RedisModule_RegisterCommandFilter(ctx, Some(filter_cb),
        raw::REDISMODULE_CMDFILTER_NOSELF as c_int) else null_mut());
    if filter.is_null() {
        return false;
    }
    // Freeing a lock is a generic event (del, rename, move), an expiry or an eviction; a
    // string event (SET) can only take a free lock or change a held one's lease, which the
    // look at the old lease's end finds anyway.
    let types = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    if api!(RedisModule_SubscribeToKeyspaceEvents(ctx, types, Some(keyspace_cb)) else ERR) != OK {
        return false;
    }
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        if api!(RedisModule_SubscribeToServerEvent(ctx, event, Some(server_event_cb)) else ERR)
            != OK
        {
            log(
                ctx,
                "warning",
                &format!("rlock: server event {id} not available"),
            );
        }
    }
    true
}
