//! ACL: whether the calling user may run a command, judged by the server itself
//! (`RedisModule_ACLCheckCommandPermissions`: one selector must allow the command and every
//! key its key specs find, with their read/write flags), and who a client runs as.
//!
//! Nothing is cached: the user is looked up by name for every check and freed after it, so an
//! `ACL SETUSER` applies to the next command.

use std::ffi::c_int;
use std::ptr::null_mut;

use redis_module::raw;

use super::{string_bytes, Ctx, RString, OK};

impl Ctx {
    /// Whether the calling user may run the command `args` (e.g. `["GET", "lock:x"]`) as the
    /// server would judge it. True where the server has no ACL API, and for the primary's link
    /// or the AOF (no user; Redis trusts them). Only inside a command: timers and callbacks
    /// have no user.
    pub fn may_run(self, args: &[&[u8]]) -> bool {
        let Some(check) = (unsafe { raw::RedisModule_ACLCheckCommandPermissions }) else {
            return true;
        };
        let strings: Option<Vec<RString>> = args.iter().map(|a| RString::new(self, a)).collect();
        let Some(strings) = strings else {
            return false;
        };
        let Ok(argc) = c_int::try_from(strings.len()) else {
            return false;
        };
        let mut argv: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.0).collect();
        self.user_may(|user| unsafe { check(user, argv.as_mut_ptr(), argc) } == OK)
    }

    /// Ask `allowed` about the calling user (looked up now, freed after).
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
}

/// Whether the client with server id `id` is authenticated for sure: it runs as an ACL user
/// other than `default` (which a connection only becomes by authenticating: `AUTH`, `HELLO
/// ... AUTH`, a module's auth), or the `default` user is `on` and `nopass` (then the server
/// asks no one to authenticate). False when it cannot be told: the server names no client
/// (Redis 7.0, a script's client) while `default` has a password or is `off` (an
/// unauthenticated connection also runs as `default`). Asked anew every time (nothing cached
/// across ACL changes). Usable where no context is at hand (a command filter); main thread
/// only.
pub fn surely_authenticated(id: u64) -> bool {
    let api = unsafe {
        (
            raw::RedisModule_GetThreadSafeContext,
            raw::RedisModule_FreeThreadSafeContext,
        )
    };
    let (Some(get_ctx), Some(free_ctx)) = api else {
        return false;
    };
    // A context for the calls below (no auto memory: everything is freed here).
    let ctx = unsafe { get_ctx(null_mut()) };
    if ctx.is_null() {
        return false;
    }
    let sure = runs_as_named_user(ctx, id) || default_needs_no_password(ctx);
    unsafe { free_ctx(ctx) };
    sure
}

fn runs_as_named_user(ctx: *mut raw::RedisModuleCtx, id: u64) -> bool {
    if id == 0 {
        return false;
    }
    let name = api!(RedisModule_GetClientUserNameById(ctx, id) else null_mut());
    if name.is_null() {
        return false;
    }
    let named = string_bytes(name) != b"default";
    api!(RedisModule_FreeString(ctx, name) else ());
    named
}

/// `ACL GETUSER default` lists the flags `on` and `nopass`.
fn default_needs_no_password(ctx: *mut raw::RedisModuleCtx) -> bool {
    let reply = api!(RedisModule_Call(ctx, c"ACL".as_ptr(), c"cc".as_ptr(),
        c"GETUSER".as_ptr(), c"default".as_ptr()) else null_mut());
    if reply.is_null() {
        return false;
    }
    let element = |r: *mut raw::RedisModuleCallReply, i: usize| api!(RedisModule_CallReplyArrayElement(r, i) else null_mut());
    let len = |r: *mut raw::RedisModuleCallReply| {
        if r.is_null()
            || api!(RedisModule_CallReplyType(r) else -1) != raw::REDISMODULE_REPLY_ARRAY as c_int
        {
            return 0;
        }
        api!(RedisModule_CallReplyLength(r) else 0)
    };
    let text = |r: *mut raw::RedisModuleCallReply| -> Vec<u8> {
        if r.is_null() {
            return Vec::new();
        }
        let mut n = 0usize;
        let p = api!(RedisModule_CallReplyStringPtr(r, &mut n) else std::ptr::null());
        if p.is_null() {
            return Vec::new();
        }
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) }.to_vec()
    };
    // Field/value pairs; `flags` is an array of words. Elements belong to the reply.
    let mut open = false;
    let fields = len(reply);
    let mut i = 0;
    while i + 1 < fields {
        if text(element(reply, i)) == b"flags" {
            let flags = element(reply, i + 1);
            let words: Vec<Vec<u8>> = (0..len(flags)).map(|j| text(element(flags, j))).collect();
            open = words.iter().any(|w| w == b"on") && words.iter().any(|w| w == b"nopass");
        }
        i += 2;
    }
    api!(RedisModule_FreeCallReply(reply) else ());
    open
}
