//! Workload 1, tax: what the loaded module costs commands that have nothing to do with locks.
//! On the one server, GET, SET, INCR, LPUSH, DEL and EXPIRE on `k:<i>` / `l:<i>` keys of a
//! prefilled keyspace, pipelined, for `TAX_SECS` each, without the module and with it back to
//! back (`alternate`): server µs per call from `INFO commandstats` and server CPU per call from
//! /proc/<pid>/stat; each figure the median of `TAX_ROUNDS` rounds.

use std::time::Instant;

use redis::Value;

use crate::common::Server;
use crate::server::{commandstats, reset_stats, ServerExt};
use crate::stats::median;
use crate::workloads::alternate::Sides;
use crate::{secs, PIPELINE_CYCLES, TAX_KEYS, TAX_ROUNDS, TAX_SECS, WARMUP_SECS};

/// The commands measured, as commandstats names them.
pub const TAX_COMMANDS: [&str; 6] = ["get", "set", "incr", "lpush", "del", "expire"];

/// One command's row: medians of the rounds.
pub struct Tax {
    pub cmd: &'static str,
    /// Server µs per call (commandstats), without and with the module.
    pub without_us: f64,
    pub with_us: f64,
    /// Server CPU µs per call (for DEL: per DEL + the SET that recreates its key).
    pub without_cpu: f64,
    pub with_cpu: f64,
}

pub struct TaxRun {
    pub rows: Vec<Tax>,
    /// `MODULE UNLOAD` refusals (retried).
    pub refused: u32,
}

/// (server µs/call, server CPU µs/call) of one command in one measurement.
type Sample = (f64, f64);

/// Prefill the keyspace, then `TAX_ROUNDS` rounds over the commands, each command measured
/// without and with the module back to back (the order flipping from one to the next); the
/// keyspace is flushed at the end.
pub fn run(server: &Server) -> TaxRun {
    let mut admin = server.conn();
    redis::cmd("FLUSHALL").exec(&mut admin).unwrap();
    prefill(server);
    let mut next = 0usize;
    let mut sides: Vec<Sides<Sample>> = TAX_COMMANDS.iter().map(|_| Sides::new()).collect();
    for round in 0..TAX_ROUNDS {
        for (i, cmd) in TAX_COMMANDS.iter().enumerate() {
            sides[i].pair(&mut admin, (round + i) % 2 == 1, || {
                measure(server, cmd, &mut next)
            });
        }
    }
    redis::cmd("FLUSHALL").exec(&mut admin).unwrap();
    let mid = |side: &[Sample], f: fn(&Sample) -> f64| median(side.iter().map(f).collect());
    let rows = TAX_COMMANDS
        .iter()
        .zip(&sides)
        .map(|(cmd, s)| Tax {
            cmd,
            without_us: mid(&s.without, |s| s.0),
            with_us: mid(&s.with, |s| s.0),
            without_cpu: mid(&s.without, |s| s.1),
            with_cpu: mid(&s.with, |s| s.1),
        })
        .collect();
    TaxRun {
        rows,
        refused: sides.iter().map(|s| s.refused).sum(),
    }
}

/// `TAX_KEYS` strings `k:<i>` (holding `i`, so INCR works) and as many one-element lists `l:<i>`.
fn prefill(server: &Server) {
    let mut con = server.conn();
    for chunk in (0..TAX_KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("k:{i}")).arg(i).ignore();
            pipe.cmd("LPUSH").arg(format!("l:{i}")).arg("x").ignore();
        }
        pipe.exec(&mut con).unwrap();
    }
}

/// One pipelined batch of `cmd` on the keys after `next`; returns the calls of `cmd` made.
/// DEL is sent as DEL `k:<i>` + SET `k:<i>` pairs, so every DEL deletes a key and the keyspace
/// stays as it was (only DEL's time is read).
fn batch(con: &mut redis::Connection, cmd: &str, next: &mut usize) -> usize {
    let mut pipe = redis::pipe();
    for _ in 0..PIPELINE_CYCLES {
        let i = *next % TAX_KEYS;
        *next += 1;
        let k = format!("k:{i}");
        match cmd {
            "get" => pipe.cmd("GET").arg(&k),
            "set" => pipe.cmd("SET").arg(&k).arg(i),
            "incr" => pipe.cmd("INCR").arg(&k),
            "lpush" => pipe.cmd("LPUSH").arg(format!("l:{i}")).arg("x"),
            "del" => pipe.cmd("DEL").arg(&k).cmd("SET").arg(&k).arg(i),
            "expire" => pipe.cmd("EXPIRE").arg(&k).arg(3600),
            _ => unreachable!("{cmd}"),
        };
    }
    let replies: Vec<Value> = pipe.query(con).unwrap();
    if cmd == "del" {
        for pair in replies.chunks(2) {
            assert_eq!(pair[0], Value::Int(1), "DEL deleted nothing");
        }
    }
    PIPELINE_CYCLES
}

/// A warm-up, then `TAX_SECS` of batches of `cmd`.
fn measure(server: &Server, cmd: &str, next: &mut usize) -> Sample {
    let mut admin = server.conn();
    let mut con = server.conn();
    let warm = Instant::now();
    while warm.elapsed() < secs(WARMUP_SECS) {
        batch(&mut con, cmd, next);
    }
    reset_stats(&mut admin);
    let cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let mut calls = 0;
    while t0.elapsed() < secs(TAX_SECS) {
        calls += batch(&mut con, cmd, next);
    }
    let cpu = server.cpu_secs() - cpu0;
    let (counted, usec) = commandstats(&mut admin)[cmd];
    assert_eq!(counted as usize, calls, "{cmd} calls");
    (usec as f64 / calls as f64, cpu * 1e6 / calls as f64)
}
