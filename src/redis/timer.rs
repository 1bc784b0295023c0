//! When the module acts later: the module timer (arming, stopping, its callback), and jobs run
//! right after the command whose keyspace event asked for them.

use std::ffi::c_void;
use std::ptr::null_mut;

use redis_module::raw;

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
        api!(RedisModule_AddPostNotificationJob(self.0, Some(job_cb), data, None) else ERR) == OK
    }
}

unsafe extern "C" fn job_cb(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // `data` is the `fn(Ctx)` given to `after_notification`.
    let job: fn(Ctx) = unsafe { std::mem::transmute::<*mut c_void, fn(Ctx)>(data) };
    guard(ctx, "post-notification job", || job(Ctx(ctx)));
}

unsafe extern "C" fn timer_cb(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    if let Some(h) = handlers() {
        guard(ctx, "timer", || (h.timer)(Ctx(ctx)));
    }
}
