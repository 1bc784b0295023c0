//! The module timer: arming, stopping, and its callback.

use std::ffi::c_void;
use std::ptr::null_mut;

use redis_module::raw;

use super::{guard, handlers, Ctx, ERR};

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

unsafe extern "C" fn timer_cb(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    if let Some(h) = handlers() {
        guard(ctx, "timer", || (h.timer)(Ctx(ctx)));
    }
}
