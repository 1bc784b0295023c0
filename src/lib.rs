//! rlock: distributed locks inside Redis, compatible with python-redis-lock.
//!
//! `LOCK.ACQUIRE name token ttl [BLOCK ms]`, `LOCK.RELEASE name token`,
//! `LOCK.RENEW name token ttl`, `LOCK.OWNER name`, `LOCK.RESETALL`: the token check happens in
//! the server, and a blocked acquire waits as a native blocked client, first come, first
//! served. Locks live in python-redis-lock's keys (`lock:<name>` holds the owner's token,
//! `lock-signal:<name>` wakes its waiters), so both kinds of client share locks and wake each
//! other. The full contract is in the README.
//!
//! # Layout
//! - [`core`]: locks' waiter queues and due checks as plain data; takes `now`, returns what to
//!   do. No Redis types; unit and property tests.
//! - [`commands`]: one file per LOCK.* command: parse fully, check, act, reply; their
//!   registration and `COMMAND DOCS`.
//! - [`keys`]: the `lock:` / `lock-signal:` keys and every write to them, each replicated as a
//!   plain core command with an absolute time.
//! - [`wake`]: blocked clients, the module timer, keyspace and server events → the core.
//! - [`ffi`]: the raw module API; all `unsafe` is here.

pub mod commands;
pub mod core;
pub mod ffi;
pub mod keys;
pub mod wake;

#[cfg(not(test))]
use redis_module::{Context, RedisString, Status};

#[cfg(not(test))]
fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    if commands::register(ctx) && ffi::subscribe(ctx) {
        ffi::log_features(ctx);
        Status::Ok
    } else {
        Status::Err
    }
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
}
