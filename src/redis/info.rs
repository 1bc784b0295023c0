//! The module's `INFO` section (`INFO rlock`): fields written by the `info` handler.

use std::ffi::{c_int, CString};
use std::ptr::null_mut;

use redis_module::raw;

use super::{guard, handlers, ERR};

/// Where the `info` handler writes its fields (each is shown as `rlock_<field>:<value>`).
pub struct Info(*mut raw::RedisModuleInfoCtx);

impl Info {
    pub fn int(&mut self, field: &str, value: i64) {
        let Ok(field) = CString::new(field) else {
            return;
        };
        api!(RedisModule_InfoAddFieldLongLong(self.0, field.as_ptr(), value) else ERR);
    }

    pub fn text(&mut self, field: &str, value: &str) {
        let (Ok(field), Ok(value)) = (CString::new(field), CString::new(value)) else {
            return;
        };
        api!(RedisModule_InfoAddFieldCString(self.0, field.as_ptr(), value.as_ptr()) else ERR);
    }
}

pub(super) unsafe extern "C" fn info_cb(
    ctx: *mut raw::RedisModuleInfoCtx,
    for_crash_report: c_int,
) {
    // A crash report may come from inside the module, with its state locked: say nothing.
    if for_crash_report != 0 {
        return;
    }
    let Some(h) = handlers() else {
        return;
    };
    // The module's own section, named after it: `INFO rlock`.
    if api!(RedisModule_InfoAddSection(ctx, null_mut()) else ERR) == ERR {
        return;
    }
    let mut info = Info(ctx);
    guard(null_mut(), "INFO", || (h.info)(&mut info));
}
