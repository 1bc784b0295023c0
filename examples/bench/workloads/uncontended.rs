//! Workload 3, uncontended: acquire+release cycles on distinct names, pipelined and not. Server
//! time per cycle from `INFO commandstats` (top-level commands only), server CPU from
//! /proc/<pid>/stat; each figure the median of `UNCONTENDED_ROUNDS` rounds over all rows.

use std::time::Instant;

use crate::common::Server;
use crate::protocols::{Client, Proto, Shas, PROTOS};
use crate::server::{commandstats, reset_stats, ServerExt};
use crate::stats::median;
use crate::{secs, TTL_SECS, UNCONTENDED_ROUNDS, UNCONTENDED_SECS, WARMUP_SECS};

/// `rlock::python::ATTEMPT_GRACE_MS` (the bench does not link the module's crate).
const PYTHON_ATTEMPT_GRACE_MS: u64 = 2_000;

pub struct Uncontended {
    pub proto: Proto,
    pub pipelined: bool,
    /// Cycles per second as the client saw them.
    pub cycles_per_sec: f64,
    /// Server time per cycle (commandstats), µs.
    pub server_us: f64,
    /// Server CPU time per cycle, µs.
    pub cpu_us: f64,
}

/// Every protocol (and the bare commands on lock keys), one at a time then pipelined, in
/// `UNCONTENDED_ROUNDS` rounds; per row the median of the rounds.
pub fn run(server: &Server, shas: &Shas) -> Vec<Uncontended> {
    let mut rounds: Vec<Vec<Uncontended>> = Vec::new();
    for _ in 0..UNCONTENDED_ROUNDS {
        let mut round = Vec::new();
        for pipelined in [false, true] {
            for p in PROTOS.into_iter().chain([Proto::FloorOnLockKeys]) {
                round.push(uncontended(server, shas, p, pipelined));
            }
        }
        rounds.push(round);
    }
    median_uncontended(&rounds)
}

/// The same, for rlock, python-redis-lock and the floor only, on a second primary (TCP, the
/// module loaded) with a replica attached (no module: replicas need none), so that every write
/// is also sent to the replica. Both are stopped afterwards.
pub fn run_with_replica() -> Vec<Uncontended> {
    let primary = Server::with(crate::common::Options {
        tcp: true,
        args: ["--appendonly", "no"].map(String::from).to_vec(),
        ..crate::common::Options::default()
    });
    let _replica = crate::common::replica_of(&primary, false);
    let shas = crate::protocols::load_scripts(&mut primary.conn());
    let mut rounds: Vec<Vec<Uncontended>> = Vec::new();
    for _ in 0..UNCONTENDED_ROUNDS {
        let mut round = Vec::new();
        for pipelined in [false, true] {
            for p in [Proto::Rlock, Proto::PyLock, Proto::Floor] {
                round.push(uncontended(&primary, &shas, p, pipelined));
            }
        }
        rounds.push(round);
    }
    median_uncontended(&rounds)
}

/// One row: a warm-up, then `UNCONTENDED_SECS` of cycles on a fresh keyspace.
fn uncontended(server: &Server, shas: &Shas, proto: Proto, pipelined: bool) -> Uncontended {
    let mut admin = server.conn();
    let mut c = Client::new(server, proto, shas, 0, TTL_SECS);
    let tag = if pipelined { "p" } else { "s" };
    let mut i = 0usize;
    let batch = |c: &mut Client, i: &mut usize| -> usize {
        if pipelined {
            c.pipelined_cycles(&format!("u{tag}-{}-", proto as u8), i)
        } else {
            let name = format!("u{tag}-{}-{i}", proto as u8);
            c.acquire(&name);
            c.release(&name);
            *i += 1;
            1
        }
    };
    // Start from an empty keyspace: the previous run's `lock-signal:*` lists (1 s TTL) would
    // still be expiring.
    redis::cmd("FLUSHALL").exec(&mut admin).unwrap();
    if proto == Proto::Rlock {
        // The rows before set `lock:<name>` keys themselves, which the module counts as
        // python-redis-lock attempts (`src/python.rs`, ATTEMPT_GRACE_MS = 2 s); with more than
        // it keeps, every release is signalled until they end. Let them end: this row measures
        // rlock alone (next to python-redis-lock acquiring 10^5 names a second, rlock's
        // releases would pay a signal each).
        std::thread::sleep(std::time::Duration::from_millis(
            PYTHON_ATTEMPT_GRACE_MS + 100,
        ));
    }
    let warm = Instant::now();
    while warm.elapsed() < secs(WARMUP_SECS) {
        batch(&mut c, &mut i);
    }
    reset_stats(&mut admin);
    let cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let mut cycles = 0;
    while t0.elapsed() < secs(UNCONTENDED_SECS) {
        cycles += batch(&mut c, &mut i);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_secs() - cpu0;
    let stats = commandstats(&mut admin);
    let usec = proto.cycle_usec(&stats, cycles);
    Uncontended {
        proto,
        pipelined,
        cycles_per_sec: cycles as f64 / elapsed,
        server_us: usec as f64 / cycles as f64,
        cpu_us: cpu * 1e6 / cycles as f64,
    }
}

/// Per protocol and mode, the median of each figure over the rounds.
fn median_uncontended(rounds: &[Vec<Uncontended>]) -> Vec<Uncontended> {
    let mid = |f: &dyn Fn(&Uncontended) -> f64, i: usize| {
        median(rounds.iter().map(|round| f(&round[i])).collect())
    };
    (0..rounds[0].len())
        .map(|i| Uncontended {
            proto: rounds[0][i].proto,
            pipelined: rounds[0][i].pipelined,
            cycles_per_sec: mid(&|u| u.cycles_per_sec, i),
            server_us: mid(&|u| u.server_us, i),
            cpu_us: mid(&|u| u.cpu_us, i),
        })
        .collect()
}
