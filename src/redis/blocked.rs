//! Blocked clients: blocking the caller of LOCK.ACQUIRE, waking it with its outcome, and the
//! reply and disconnect callbacks, which reach the engine through the installed handlers.

use std::ffi::{c_int, c_void};
use std::ptr::null_mut;

use redis_module::raw;

use super::{guard, handlers, Ctx, Handle, Reply, ERR, OK};

/// Why a blocked client is woken, and so what its reply will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblocked {
    /// Handed the lock: `OK`.
    Granted,
    /// Timed out, or `CLIENT UNBLOCK [TIMEOUT]`: nil.
    Nil,
    /// `CLIENT UNBLOCK ... ERROR`: the server's `-UNBLOCKED` error.
    Error,
    /// Not handed the lock: it could not be given what it asked for (a fence).
    Failed,
    /// Not handed the lock: it now lives on another cluster node (its slot is being
    /// migrated); the client is told to try again, and is routed there.
    TryAgain,
}

impl Unblocked {
    /// The private data that carries the outcome to the reply callback.
    fn tag(self) -> *mut c_void {
        static TAGS: [u8; 4] = [1, 2, 3, 4];
        match self {
            Unblocked::Granted => &TAGS[0] as *const u8 as *mut c_void,
            Unblocked::Error => &TAGS[1] as *const u8 as *mut c_void,
            Unblocked::Failed => &TAGS[2] as *const u8 as *mut c_void,
            Unblocked::TryAgain => &TAGS[3] as *const u8 as *mut c_void,
            Unblocked::Nil => null_mut(),
        }
    }
}

/// Wake a blocked client; its reply follows from `how`.
pub fn unblock(handle: Handle, how: Unblocked) {
    api!(RedisModule_UnblockClient(handle as *mut raw::RedisModuleBlockedClient, how.tag()) else ERR);
}

impl Ctx {
    /// Block the calling client with no time limit of Redis's own (rlock ends waits itself).
    /// Its reply comes from the `reply` handler after `unblock`; the `disconnected` handler
    /// hears of it going away.
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

    /// In a reply callback: which blocked client this is.
    fn blocked_handle(self) -> Handle {
        api!(RedisModule_GetBlockedClientHandle(self.0) else null_mut()) as Handle
    }

    /// In a reply callback: why the client was unblocked.
    fn blocked_outcome(self) -> Unblocked {
        let data = api!(RedisModule_GetBlockedClientPrivateData(self.0) else null_mut());
        if data == Unblocked::Granted.tag() {
            Unblocked::Granted
        } else if data == Unblocked::Error.tag() {
            Unblocked::Error
        } else if data == Unblocked::Failed.tag() {
            Unblocked::Failed
        } else if data == Unblocked::TryAgain.tag() {
            Unblocked::TryAgain
        } else {
            Unblocked::Nil
        }
    }
}

unsafe extern "C" fn reply_cb(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let c = Ctx(ctx);
    let mut reply = Ok(Reply::Nil);
    if let Some(h) = handlers() {
        let (handle, how) = (c.blocked_handle(), c.blocked_outcome());
        guard(ctx, "reply", || reply = (h.reply)(c, handle, how));
    }
    c.reply(reply);
    OK
}

unsafe extern "C" fn disconnect_cb(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    // The client is going away, or the server ended the wait itself (a demotion to replica
    // answers every blocked client with an error): it has its answer, or needs none.
    if let Some(h) = handlers() {
        guard(ctx, "disconnect", || {
            (h.disconnected)(Ctx(ctx), bc as Handle)
        });
    }
}
