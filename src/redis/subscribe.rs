//! What the module hears from the server: keyspace events, server events (flush, swapdb,
//! loading, role change) and every command through a filter; the module options; the log of
//! the paths taken at load.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::null_mut;
use std::sync::atomic::Ordering;

use redis_module::raw;

use super::key::ANNOUNCING;
use super::{guard, handlers, log, string_bytes, Ctx, Handlers, ServerEvent, ERR, OK};

unsafe extern "C" fn keyspace_cb(
    ctx: *mut raw::RedisModuleCtx,
    type_: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let _ = type_;
    if ANNOUNCING.load(Ordering::Relaxed) {
        super::timer::back_home(Ctx(ctx));
        return OK; // rlock's own write: nothing to react to
    }
    let event = if event.is_null() {
        &[][..]
    } else {
        unsafe { CStr::from_ptr(event) }.to_bytes()
    };
    if event == b"move_from" {
        home::leaving(Ctx(ctx));
    }
    if let Some(h) = handlers() {
        guard(ctx, "keyspace event", || {
            (h.key_event)(Ctx(ctx), string_bytes(key), event)
        });
    }
    if event == b"move_to" || event == b"copy_to" {
        home::arrived(Ctx(ctx), event == b"copy_to");
    }
    OK
}

/// Valkey 8.1 runs keyspace callbacks on the client executing the command itself and selects
/// the event's database on it without selecting the old one back (valkey-io/valkey#4024,
/// fixed upstream): after `MOVE key db` (`move_to`) or `COPY a b DB n` (`copy_to`) that
/// client would go on in the other database, only because a module listens. rlock notes the
/// database the command started in and selects it back. `MOVE` announces `move_from`, in that
/// database, just before `move_to`; a `COPY ... DB` is seen by the command filter (not when
/// queued in `MULTI`: its database is only known at `EXEC`), possibly long before it runs
/// (held back by `CLIENT PAUSE`). Where the callback's client is a temporary one, as on
/// Redis, nothing matches and nothing changes.
mod home {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use redis_module::raw;

    use super::super::call::client_info;
    use super::super::Ctx;

    /// More clients with a `COPY ... DB` noted than this (each left by a `COPY` that failed
    /// and a disconnect) and the notes are dropped: the map stays small whatever clients do.
    const MAX_COPYING: usize = 64;

    thread_local! {
        /// The client whose `MOVE` is running, and its own database.
        static MOVING: Cell<Option<(u64, i32)>> = const { Cell::new(None) };
        /// Clients with a `COPY ... DB` about to run, and their own databases.
        static COPYING: RefCell<HashMap<u64, i32>> = RefCell::new(HashMap::new());
    }

    /// `move_from`: the key leaves the database the command runs in.
    pub fn leaving(ctx: Ctx) {
        MOVING.set(Some((ctx.client_id(), ctx.db())));
    }

    /// The command filter saw `COPY ... DB` from client `id`.
    pub fn copying(id: u64) {
        let Some(info) = client_info(id) else {
            return;
        };
        if info.flags & u64::from(raw::REDISMODULE_CLIENTINFO_FLAG_MULTI) != 0 {
            return;
        }
        let db = i32::from(info.db);
        COPYING.with_borrow_mut(|m| {
            if m.len() >= MAX_COPYING {
                m.clear();
            }
            m.insert(id, db);
        });
    }

    /// A new command from client `id` (asked only while something is noted): what was noted
    /// for it belongs to a finished command.
    pub fn next_command(id: impl FnOnce() -> u64) {
        if COPYING.with_borrow(|m| m.is_empty()) {
            return;
        }
        let id = id();
        COPYING.with_borrow_mut(|m| m.remove(&id));
    }

    /// `move_to`/`copy_to`: the key arrived; the client goes back home if the server moved it.
    pub fn arrived(ctx: Ctx, copy: bool) {
        let id = ctx.client_id();
        let home = if copy {
            COPYING.with_borrow_mut(|m| m.remove(&id))
        } else {
            MOVING
                .take()
                .and_then(|(client, db)| (client == id).then_some(db))
        };
        if let Some(db) = home {
            if db != ctx.db() {
                ctx.select_db(db);
            }
        }
    }
}

/// Every command passes here first (a few dozen instructions for most). `COPY ... DB` is
/// noted for `home`; then `Handlers::command` looks at it. Filters run when a command is queued
/// in MULTI too, and not again when a command held back by `CLIENT PAUSE` finally runs.
unsafe extern "C" fn filter_cb(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let cmd = Filtered(fctx);
    home::next_command(|| cmd.client_id());
    let argc = cmd.len();
    if (5..=6).contains(&argc)
        && cmd.arg(0).eq_ignore_ascii_case(b"copy")
        && (3..argc).any(|i| cmd.arg(i).eq_ignore_ascii_case(b"db"))
    {
        home::copying(cmd.client_id());
    }
    if argc >= 3 && is_script_call(cmd.arg(0)) {
        super::timer::script_called(cmd.client_id());
    }
    if let Some(h) = handlers() {
        guard(null_mut(), "command filter", || (h.command)(&cmd));
    }
}

/// `EVAL`, `EVALSHA`, `FCALL` and their `_RO` forms.
fn is_script_call(name: &[u8]) -> bool {
    matches!(name.first(), Some(b'e' | b'E' | b'f' | b'F'))
        && [
            &b"eval"[..],
            b"evalsha",
            b"eval_ro",
            b"evalsha_ro",
            b"fcall",
            b"fcall_ro",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// A command as the command filter sees it, before it runs.
pub struct Filtered(*mut raw::RedisModuleCommandFilterCtx);

impl Filtered {
    /// The number of arguments, the command's name included.
    pub fn len(&self) -> usize {
        let n = api!(RedisModule_CommandFilterArgsCount(self.0) else 0);
        usize::try_from(n).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Argument `i` (0: the command's name); empty past the end.
    pub fn arg(&self, i: usize) -> &[u8] {
        let Ok(i) = c_int::try_from(i) else {
            return &[];
        };
        string_bytes(api!(RedisModule_CommandFilterArgGet(self.0, i) else null_mut()))
    }

    /// The id of the client sending it (0 where the server cannot say: Redis 7.0).
    pub fn client_id(&self) -> u64 {
        api!(RedisModule_CommandFilterGetClientId(self.0) else 0)
    }

    /// Whether the sending client is authenticated for sure (see `acl::surely_authenticated`).
    pub fn sender_surely_authenticated(&self) -> bool {
        super::acl::surely_authenticated(self.client_id())
    }

    /// Put `bytes` in as argument `i`, moving the ones from `i` on one place further.
    pub fn insert(&self, i: usize, bytes: &[u8]) {
        let Ok(i) = c_int::try_from(i) else {
            return;
        };
        let arg = api!(RedisModule_CreateString(null_mut(), bytes.as_ptr().cast(), bytes.len()) else null_mut());
        if arg.is_null() {
            return;
        }
        // The filter owns the strings it is given, but not one it refused.
        if api!(RedisModule_CommandFilterArgInsert(self.0, i, arg) else ERR) != OK {
            api!(RedisModule_FreeString(null_mut(), arg) else ());
            return;
        }
        own::remember(arg);
    }

    /// Whether argument `i` was put there by this filter (`insert`, `rename`) in an earlier pass
    /// over the same command: Redis 7.0 filters a command again when a `CLIENT PAUSE` held it
    /// back, and a second pass must not do the work twice.
    pub fn is_own(&self, i: usize) -> bool {
        let Ok(i) = c_int::try_from(i) else {
            return false;
        };
        own::is_own(api!(RedisModule_CommandFilterArgGet(self.0, i) else null_mut()))
    }

    /// Make it `<name> <the arguments after the first n>`.
    pub fn rename(&self, name: &CStr, n: usize) {
        if n == 0 {
            return;
        }
        let bytes = name.to_bytes();
        let name = api!(RedisModule_CreateString(null_mut(), bytes.as_ptr().cast(), bytes.len()) else null_mut());
        if name.is_null() {
            return;
        }
        // The filter owns the strings it is given.
        if api!(RedisModule_CommandFilterArgReplace(self.0, 0, name) else ERR) == OK {
            own::remember(name);
        }
        for _ in 1..n {
            api!(RedisModule_CommandFilterArgDelete(self.0, 1) else ERR);
        }
    }
}

/// The strings the filter put into commands, each with one reference of its own, so that a
/// pointer found again in a command is surely one of them (never freed and reused meanwhile).
/// At most `MAX` are remembered: a command held back while more than that many others were
/// filtered is filtered twice, and its call answered with an argument error.
mod own {
    use std::cell::RefCell;
    use std::collections::{HashSet, VecDeque};
    use std::ptr::null_mut;

    use redis_module::raw;

    const MAX: usize = 1024;

    thread_local! {
        static OWN: RefCell<(VecDeque<usize>, HashSet<usize>)> = RefCell::default();
    }

    pub fn remember(s: *mut raw::RedisModuleString) {
        api!(RedisModule_RetainString(null_mut(), s) else ());
        let old = OWN.with_borrow_mut(|(order, set)| {
            order.push_back(s as usize);
            set.insert(s as usize);
            if order.len() > MAX {
                let old = order.pop_front()?;
                set.remove(&old);
                Some(old)
            } else {
                None
            }
        });
        if let Some(old) = old {
            api!(RedisModule_FreeString(null_mut(), old as *mut raw::RedisModuleString) else ());
        }
    }

    pub fn is_own(s: *mut raw::RedisModuleString) -> bool {
        !s.is_null() && OWN.with_borrow(|(_, set)| set.contains(&(s as usize)))
    }

    /// Let go of every string remembered (the module is being unloaded).
    pub fn forget() {
        let all: Vec<usize> = OWN.with_borrow_mut(|(order, set)| {
            set.clear();
            order.drain(..).collect()
        });
        for s in all {
            api!(RedisModule_FreeString(null_mut(), s as *mut raw::RedisModuleString) else ());
        }
    }
}

/// The module is being unloaded: the filter's own strings go.
pub fn forget_filter_strings() {
    own::forget();
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
    let event = match eid.id {
        raw::REDISMODULE_EVENT_FLUSHDB
            if sub == raw::REDISMODULE_SUBEVENT_FLUSHDB_END && !data.is_null() =>
        {
            let db = unsafe { (*(data as *const FlushInfo)).dbnum };
            ServerEvent::Flushed((db >= 0).then_some(db))
        }
        raw::REDISMODULE_EVENT_SWAPDB if !data.is_null() => {
            let info = unsafe { &*(data as *const SwapDbInfo) };
            ServerEvent::Swapped(info.first, info.second)
        }
        raw::REDISMODULE_EVENT_LOADING if sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED => {
            ServerEvent::Loaded
        }
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => ServerEvent::RoleChanged,
        raw::REDISMODULE_EVENT_CLIENT_CHANGE
            if sub == raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED && !data.is_null() =>
        {
            let info = unsafe { &*(data as *const raw::RedisModuleClientInfo) };
            ServerEvent::ClientGone(info.id)
        }
        _ => return,
    };
    if let Some(h) = handlers() {
        guard(ctx, "server event", || (h.server_event)(Ctx(ctx), event));
    }
}

/// Log at load which of the APIs that differ between servers this one offers, and so which
/// paths rlock takes on it.
pub fn log_features(ctx: &redis_module::Context) {
    let has = |present: bool| if present { "yes" } else { "no (skipped)" };
    let (docs, categories, acl, pause, filter_client, jobs) = unsafe {
        (
            { raw::RedisModule_SetCommandInfo }.is_some(),
            { raw::RedisModule_SetCommandACLCategories }.is_some(),
            { raw::RedisModule_ACLCheckCommandPermissions }.is_some(),
            { raw::RedisModule_AvoidReplicaTraffic }.is_some(),
            { raw::RedisModule_CommandFilterGetClientId }.is_some(),
            { raw::RedisModule_AddPostNotificationJob }.is_some(),
        )
    };
    let unblock_user = filter_client && unsafe { raw::RedisModule_GetClientUserNameById }.is_some();
    log(
        ctx.ctx,
        "notice",
        &format!(
            "rlock: COMMAND DOCS: {}; ACL categories on LOCK.RESETALL/LOCK.UNBLOCK: {}; \
             ACL checks on lock:<name>: {}; writes held back while paused (AvoidReplicaTraffic): {}; \
             python waiters known by client (CommandFilterGetClientId): {}; \
             hand-over right after a freeing command (AddPostNotificationJob): {}; \
             CLIENT UNBLOCK of waiters with CLIENT UNBLOCK's rights alone: {}",
            has(docs),
            has(categories),
            has(acl),
            has(pause),
            if filter_client { "yes" } else { "no (a BLPOP counts until its timeout or one signal)" },
            if jobs { "yes" } else { "no (from the module timer)" },
            if unblock_user { "yes" } else { "only while the default user has no password (else LOCK.UNBLOCK's rights too)" }
        ),
    );
}

/// Valkey 9's module option: the module copes with atomic slot migration (`CLUSTER
/// MIGRATESLOTS`), which the server refuses while a loaded module has not declared it. rlock
/// does: the source serves a slot's locks until the cut-over (the module's writes are plain
/// core commands, streamed to the target with the slot's), then drops its keys; the module
/// writes a lock's keys only where the server serves them, and answers the waiters of a lock
/// gone that way `-TRYAGAIN` (`engine::redirect_waiters`, within a second at most).
const VALKEY_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION: c_int = 1 << 5;

/// Whether the server has atomic slot migration (knows `CLUSTER MIGRATESLOTS`): only there is
/// the option's bit given (elsewhere it is not defined, or means something else).
fn has_atomic_slot_migration(ctx: Ctx) -> bool {
    let reply = api!(RedisModule_Call(ctx.0, c"COMMAND".as_ptr(), c"cc".as_ptr(),
        c"INFO".as_ptr(), c"cluster|migrateslots".as_ptr()) else null_mut());
    if reply.is_null() {
        return false;
    }
    // An array with one entry: the command's info, or nil for a command the server lacks.
    let entry = api!(RedisModule_CallReplyArrayElement(reply, 0) else null_mut());
    let known = !entry.is_null()
        && api!(RedisModule_CallReplyType(entry) else 0) == raw::REDISMODULE_REPLY_ARRAY as c_int;
    api!(RedisModule_FreeCallReply(reply) else ());
    known
}

/// Install `handlers` and subscribe them to the keyspace events (every class that can end a
/// lock), the server events (flush, swapdb, loading, role change, a client gone), and `CLIENT UNBLOCK` of
/// waiters (the command filter). Modified keys are announced explicitly (`Key::touched`), so
/// that opening a key without writing it changes nothing for `WATCH` or client-side caching.
pub fn subscribe(ctx: &redis_module::Context, handlers: Handlers) -> bool {
    super::install(handlers);
    super::context::cluster_init(Ctx(ctx.ctx));
    let ctx = ctx.ctx;
    let mut options = raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int;
    if has_atomic_slot_migration(Ctx(ctx)) {
        options |= VALKEY_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION;
    }
    api!(RedisModule_SetModuleOptions(ctx, options) else ());
    // After the `redis-module` crate's own (registered before `init`): the last one counts.
    api!(RedisModule_RegisterInfoFunc(ctx, Some(super::info::info_cb)) else ERR);
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
        raw::REDISMODULE_EVENT_CLIENT_CHANGE,
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
