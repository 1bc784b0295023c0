//! Workload 2, pycycle: python-redis-lock's own uncontended cycle (`SET lock:<n> <id> NX EX` +
//! EVALSHA of its unlock script, as `protocols` speaks it) on distinct names, pipelined, without
//! the module and with it back to back on the one server (`alternate`): server µs per cycle from
//! `INFO commandstats` (the two top-level commands) and server CPU per cycle; each figure the
//! median of `TAX_ROUNDS` rounds of `TAX_SECS`.

use std::time::Instant;

use crate::common::Server;
use crate::protocols::{Client, Proto, Shas};
use crate::server::{commandstats, reset_stats, ServerExt};
use crate::stats::median;
use crate::workloads::alternate::Sides;
use crate::{secs, TAX_ROUNDS, TAX_SECS, TTL_SECS, WARMUP_SECS};

pub struct PyCycle {
    /// Server µs per cycle (commandstats), without and with the module.
    pub without_us: f64,
    pub with_us: f64,
    /// Server CPU µs per cycle.
    pub without_cpu: f64,
    pub with_cpu: f64,
    /// `MODULE UNLOAD` refusals (retried).
    pub refused: u32,
}

pub fn run(server: &Server, shas: &Shas) -> PyCycle {
    let mut admin = server.conn();
    let mut next = 0usize;
    let mut rounds = Sides::new();
    for round in 0..TAX_ROUNDS {
        rounds.pair(&mut admin, round % 2 == 1, || {
            measure(server, shas, &mut next)
        });
    }
    let mid = |side: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(side.iter().map(f).collect());
    PyCycle {
        without_us: mid(&rounds.without, |s| s.0),
        with_us: mid(&rounds.with, |s| s.0),
        without_cpu: mid(&rounds.without, |s| s.1),
        with_cpu: mid(&rounds.with, |s| s.1),
        refused: rounds.refused,
    }
}

/// One measurement on an empty keyspace (the `lock-signal:<n>` lists the unlock script leaves
/// for 1 s would still be expiring): a warm-up, then `TAX_SECS` of pipelined cycles. Returns
/// (server µs/cycle, server CPU µs/cycle).
fn measure(server: &Server, shas: &Shas, next: &mut usize) -> (f64, f64) {
    let mut admin = server.conn();
    let mut c = Client::new(server, Proto::PyLock, shas, 0, TTL_SECS);
    let mut batch = |c: &mut Client| c.pipelined_cycles("py-", next);
    redis::cmd("FLUSHALL").exec(&mut admin).unwrap();
    let warm = Instant::now();
    while warm.elapsed() < secs(WARMUP_SECS) {
        batch(&mut c);
    }
    reset_stats(&mut admin);
    let cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let mut cycles = 0;
    while t0.elapsed() < secs(TAX_SECS) {
        cycles += batch(&mut c);
    }
    let cpu = server.cpu_secs() - cpu0;
    let stats = commandstats(&mut admin);
    let usec = Proto::PyLock.cycle_usec(&stats, cycles);
    (usec as f64 / cycles as f64, cpu * 1e6 / cycles as f64)
}
