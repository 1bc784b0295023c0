//! When the module acts later: the module timer (arming, stopping, its callback), and jobs run
//! right after the command whose keyspace event asked for them.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::null_mut;

use redis_module::raw;

use super::call::client_info;
use super::{guard, handlers, Ctx, ERR, OK};

impl Ctx {
    /// Run the `timer` handler after `ms` milliseconds.
    pub fn create_timer(self, ms: i64) -> u64 {
        api!(RedisModule_CreateTimer(self.0, ms.max(0), Some(timer_cb), null_mut()) else 0)
    }

    pub fn stop_timer(self, id: u64) {
        let mut data: *mut c_void = null_mut();
        api!(RedisModule_StopTimer(self.0, id, &mut data) else ERR);
    }
}

impl Ctx {
    /// From a keyspace event: run `job` as soon as the command (or expiry, or eviction) that
    /// caused it is done, in the same atomic unit, where writes are safe and replicate after
    /// that command's. False where the server has no post-notification jobs (Redis 7.0) or
    /// refuses them (loading, a read-only replica): use the timer.
    pub fn after_notification(self, job: fn(Ctx)) -> bool {
        let data = job as *mut c_void;
        let queued = api!(RedisModule_AddPostNotificationJob(self.0, Some(job_cb), data, None) else ERR)
            == OK;
        if queued {
            // A keyspace callback's context: on Valkey 8.1 its client is the one whose command
            // raised the event (see `back_home`).
            JOB_CALLER.set(Some(self.client_id()));
        }
        queued
    }
}

thread_local! {
    /// The client of the context that queued the pending job.
    static JOB_CALLER: Cell<Option<u64>> = const { Cell::new(None) };
    /// The client that sent the last `EVAL`/`EVALSHA`/`FCALL` (and `_RO`), as the command
    /// filter saw it.
    static SCRIPT_CALLER: Cell<Option<u64>> = const { Cell::new(None) };
    /// While a job runs: that client, if it is a real one, and the database it had selected
    /// when the job began.
    static JOB_HOME: Cell<Option<(u64, i32)>> = const { Cell::new(None) };
}

/// A keyspace callback for one of the module's own writes. Valkey 8.1 runs keyspace callbacks
/// on the client whose command raised the event and selects the event's database on it
/// without selecting back; a post-notification job (whose own context is a temporary client)
/// that writes a lock of another database would so move the `EXEC` or `EVAL` caller it runs
/// after. The caller is put back where it was when the job began. On servers that run
/// callbacks on temporary clients the ids never match and nothing changes.
pub(super) fn back_home(ctx: Ctx) {
    let Some((client, db)) = JOB_HOME.get() else {
        return;
    };
    if ctx.client_id() == client && ctx.db() != db {
        ctx.select_db(db);
    }
}

unsafe extern "C" fn job_cb(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // `data` is the `fn(Ctx)` given to `after_notification`.
    let job: fn(Ctx) = unsafe { std::mem::transmute::<*mut c_void, fn(Ctx)>(data) };
    // The client whose command raised the event; inside a script the callback's is the script
    // engine's (no client info), and the one that ran the script is the filter's last.
    let home = [JOB_CALLER.take(), SCRIPT_CALLER.get()]
        .into_iter()
        .flatten()
        .find_map(|id| Some((id, i32::from(client_info(id)?.db))));
    JOB_HOME.set(home);
    guard(ctx, "post-notification job", || job(Ctx(ctx)));
    JOB_HOME.set(None);
}

unsafe extern "C" fn timer_cb(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    if let Some(h) = handlers() {
        guard(ctx, "timer", || (h.timer)(Ctx(ctx)));
    }
}

/// The command filter saw a script or function call from `client`.
pub(super) fn script_called(client: u64) {
    SCRIPT_CALLER.set(Some(client));
}
