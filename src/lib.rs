//! rlock: distributed locks inside Redis, compatible with python-redis-lock.
//!
//! `LOCK.ACQUIRE name token ttl [BLOCK ms]`, `LOCK.RELEASE name token`,
//! `LOCK.RENEW name token ttl`, `LOCK.OWNER name`, `LOCK.INFO name`, `LOCK.RESETALL`: the
//! token check happens in the server, and a blocked acquire waits as a native blocked client,
//! first come, first served. Locks live in python-redis-lock's keys (`lock:<name>` holds the owner's token,
//! `lock-signal:<name>` wakes its waiters), so both kinds of client share locks and wake each
//! other. The full contract is in the README.
//!
//! # Layout
//!
//! Each layer calls only the layers below it:
//!
//! - [`commands`]: one file per LOCK.* command: parse every argument, check the caller's
//!   rights, call the engine, reply; their registration and `COMMAND DOCS`.
//! - [`events`]: the handlers the Redis layer calls when the server reports something (a
//!   reply due, a hang-up, the timer, keyspace and server events) → the engine. Thin.
//! - [`engine`]: every decision about a lock, one function per thing that can happen to it;
//!   the rules that keep the server safe (saturating times, a bounded timer, no writes while
//!   paused, one reply per wait).
//! - [`core`]: locks' waiter queues, deadlines and due looks as plain data; takes `now`,
//!   returns what to do. No Redis types; unit and property tests.
//! - [`python`]: who may be waiting the python-redis-lock way (plain data, like `core`).
//! - [`config`]: the module's options (`CONFIG SET rlock.*`).
//! - [`stats`]: the counters of `INFO rlock`.
//! - [`fence`]: how the next fence is made (counter and clock), as plain data.
//! - [`keys`]: the `lock:` / `lock-signal:` keys and every write to them, each replicated as a
//!   plain core command with an absolute time and announced as the core command would be.
//! - [`redis`]: the safe layer over the raw module API; all `unsafe` is here, and it imports
//!   nothing from the crate: `lib.rs` gives it the event handlers at load.

pub mod commands;
pub mod config;
pub mod core;
pub mod engine;
pub mod events;
pub mod fence;
pub mod keys;
pub mod python;
pub mod redis;
pub mod stats;

#[cfg(not(test))]
use redis_module::{Context, RedisString, Status};

#[cfg(not(test))]
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if let Err(why) = config::apply_load_args(&args) {
        ctx.log_warning(&why);
        return Status::Err;
    }
    if commands::register(ctx) && crate::redis::subscribe(ctx, events::handlers()) {
        crate::redis::log_features(ctx);
        engine::loaded(crate::redis::Ctx::of(ctx));
        Status::Ok
    } else {
        Status::Err
    }
}

/// `MODULE UNLOAD` (the server refuses it while a client is blocked or a timer armed): refused
/// while a client still points at a LOCK.* command (its last command, or one queued in
/// `MULTI`): the server would keep that pointer into the unloaded module and crash on the next
/// `CLIENT LIST` or `EXEC` (redis/redis#10259). Otherwise give back the memory the engine
/// still holds, which would outlive the unloaded code.
#[cfg(not(test))]
fn deinit(ctx: &Context) -> Status {
    let c = crate::redis::Ctx::of(ctx);
    match crate::redis::clients_pointing_at(c, "lock.") {
        Some(0) => {}
        found => {
            let why = match found {
                Some(n) => {
                    format!("{n} client(s) last ran a LOCK.* command or are queueing a MULTI")
                }
                None => "CLIENT LIST could not be read".into(),
            };
            c.log_warning(&format!(
                "rlock: MODULE UNLOAD refused: {why}; the server would keep pointers into the \
                 unloaded module in them (redis/redis#10259). Unload once they have sent \
                 another command or disconnected"
            ));
            return Status::Err;
        }
    }
    engine::forget_everything();
    crate::redis::cluster_unload();
    crate::redis::forget_filter_strings();
    Status::Ok
}

// The module entry point and Redis's allocator only exist inside Redis: unit tests run on the
// system allocator.
#[cfg(not(test))]
redis_module::redis_module! {
    name: "rlock",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    deinit: deinit,
    configurations: [
        i64: [],
        string: [],
        bool: [],
        enum: [
            ["python-signal", &config::PYTHON_SIGNAL, config::PythonSignal::auto,
             redis_module::configuration::ConfigurationFlags::DEFAULT, None],
        ],
        // Checked and applied by `init` (config::apply_load_args): the crate's own reading
        // ignores unknown names.
        module_args_as_configuration: false,
    ]
}
