//! The safe layer over the raw Redis module API. Every `unsafe` block of the crate lives in this
//! folder, and it imports nothing from the rest of the crate: its callbacks reach the engine
//! through the `Handlers` given to `install` at load.
//!
//! Rules kept here: every entry point from Redis (`extern "C" fn`) catches panics, so a bug
//! becomes an error reply or a log line instead of taking the server down; strings and keys
//! opened here are freed by `Drop`; API functions that only newer servers have are looked up
//! as `Option`s and treated as absent when `None`.
//!
//! - `context`: `Ctx`, flags, the clock, replies, replication, key scans
//! - `acl`: may the calling user run a command (the server's judgement), who a client runs as
//! - `key`: `Key`, the low-level key API, keyspace notifications of the module's writes
//! - `blocked`: blocking and waking clients, the reply and disconnect callbacks
//! - `timer`: the module timer
//! - `call`: `GET` and `CLIENT UNBLOCK` run through the server
//! - `command`: command registration and docs, the command entry point
//! - `subscribe`: keyspace and server events, the command filter, module options
//! - `info`: the module's `INFO` section

use std::ffi::{c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use redis_module::raw;

/// Calls an API function pointer; a missing one (older server) yields `$missing`.
macro_rules! api {
    ($f:ident ( $($arg:expr),* ) else $missing:expr) => {
        match unsafe { raw::$f } {
            Some(f) => unsafe { f($($arg),*) },
            None => $missing,
        }
    };
}

mod acl;
mod blocked;
mod call;
mod command;
mod context;
mod info;
mod key;
mod subscribe;
mod timer;

pub use blocked::{unblock, Unblocked};
pub use call::{client_blocked, clients_blocked_in, clients_pointing_at};
pub use command::{create_command, run_command, ArgType, CommandSpec, EntryPoint};
pub use context::{cluster_mode, cluster_unload, Ctx};
pub use info::Info;
pub use key::{EventClass, Key, Kind};
pub use subscribe::{forget_filter_strings, log_features, subscribe, Filtered};

/// A blocked client, by the address of its `RedisModuleBlockedClient`.
pub type Handle = usize;

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

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
    /// Field/value pairs: a map in RESP3, a flat array in RESP2 (as `XINFO` replies).
    Map(Vec<(&'static str, Reply)>),
    /// An array.
    Array(Vec<Reply>),
}

/// An error reply, with its Redis prefix (`ERR ...`, `WRONGTYPE ...`, `NOPERM ...`).
#[derive(Debug, PartialEq, Eq)]
pub struct CmdError(pub String);

pub type CmdResult = Result<Reply, CmdError>;

/// A server event, as the module hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// `FLUSHDB` of one database, or `FLUSHALL` (`None`).
    Flushed(Option<i32>),
    /// `SWAPDB a b`.
    Swapped(i32, i32),
    /// A load (RDB, AOF, `DEBUG RELOAD`) has ended.
    Loaded,
    /// The server became a primary or a replica.
    RoleChanged,
    /// The client with this id is gone (disconnected, killed, timed out).
    ClientGone(u64),
}

/// What the rest of the crate does when the server calls in. Given once, at load.
pub struct Handlers {
    /// A blocked client is being answered; it was woken with `Unblocked`.
    pub reply: fn(Ctx, Handle, Unblocked) -> CmdResult,
    /// A blocked client was unblocked by the server (hang-up, demotion), not by the module.
    pub disconnected: fn(Ctx, Handle),
    /// The module timer fired.
    pub timer: fn(Ctx),
    /// A keyspace event: (key, event name).
    pub key_event: fn(Ctx, &[u8], &[u8]),
    /// A server event.
    pub server_event: fn(Ctx, ServerEvent),
    /// Every command, before it runs (the command filter): may rewrite it.
    pub command: fn(&Filtered),
    /// `INFO rlock`: the section's fields.
    pub info: fn(&mut Info),
}

static HANDLERS: OnceLock<Handlers> = OnceLock::new();

/// Give the layer its handlers (`subscribe` does); the first call wins.
fn install(handlers: Handlers) {
    let _ = HANDLERS.set(handlers);
}

fn handlers() -> Option<&'static Handlers> {
    HANDLERS.get()
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
