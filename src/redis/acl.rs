//! ACL: whether the calling user may run a command, judged by the server itself
//! (`RedisModule_ACLCheckCommandPermissions`: one selector must allow the command and every
//! key its key specs find, with their read/write flags).
//!
//! Nothing is cached: the user is looked up by name for every check and freed after it, so an
//! `ACL SETUSER` applies to the next command.

use std::ffi::c_int;

use redis_module::raw;

use super::{Ctx, RString, OK};

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
