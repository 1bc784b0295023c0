//! Command registration (`COMMAND DOCS`, key specs, ACL categories) and the body of every
//! command entry point.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{null, null_mut};

use redis_module::raw;

use super::{string_bytes, CmdError, CmdResult, Ctx, ERR, OK};

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
    // No valid call has more than 8 arguments (9 with the key the cluster filter puts in):
    // those are read without an allocation. A longer one is still handed over whole (a Vec),
    // so that the handler gives the error it is due (a repeated or unknown option, not an
    // arity error).
    let mut buf: [&[u8]; 9] = [&[]; 9];
    let cap = if super::cluster_mode() { 9 } else { 8 };
    let long: Vec<&[u8]>;
    let args: &[&[u8]] = if raw_args.len() > cap {
        long = raw_args.iter().map(|a| string_bytes(*a)).collect();
        &long
    } else {
        for (slot, arg) in buf.iter_mut().zip(raw_args) {
            *slot = string_bytes(*arg);
        }
        &buf[..raw_args.len()]
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
            $crate::redis::run_command(ctx, argv, argc, $handler)
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
    /// A flag: the token alone (`BIND`).
    PureToken,
}

/// Register a command. Argument 1 of a command taking a name is declared a key flagged
/// NOT_KEY: cluster clients route by it (`COMMAND INFO`), the server's cluster routing takes
/// that position (its legacy key range ignores the flag), and ACL leaves the real keys
/// (`lock:<name>`, `lock-signal:<name>`) to the command's own check.
///
/// In cluster mode the command filter puts the lock's routing key in front of the name (see
/// `commands::routed`), so that the server routes by the key holding the lock; the server then
/// checks the arity of commands taking a name no further than "a name" (-2), the command the
/// rest.
pub fn create_command(ctx: &redis_module::Context, spec: &CommandSpec) -> bool {
    let ctx = ctx.ctx;
    super::context::cluster_init(Ctx(ctx));
    let arity = if spec.takes_name && super::cluster_mode() {
        -2
    } else {
        spec.arity
    };
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
                ArgType::PureToken => {
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN
                }
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
    info.arity = arity;
    info.key_specs = if key_specs.is_empty() {
        null_mut()
    } else {
        key_specs.as_mut_ptr()
    };
    info.args = args.as_mut_ptr();
    unsafe { set_info(cmd, &info) == OK }
}
