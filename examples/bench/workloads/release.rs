//! Workload 7b, release cost: a release with 10,000 waiters queued on one lock versus one,
//! each queue a ring of raw connections that hands the lock down the line.

use redis::Connection;

use crate::common::Server;
use crate::server::{await_clients, commandstats, info_u64, reset_stats, Raw, ServerExt};
use crate::stats::median;

pub struct ReleaseCost {
    /// Waiters in line at each release.
    pub queued: usize,
    /// Server time per call (commandstats), µs.
    pub release_us: f64,
    pub acquire_us: f64,
    /// Server CPU time per release + handoff + requeue cycle, µs.
    pub cpu_us_per_cycle: f64,
}

/// `queued` waiters in line on one lock, plus the holder, each on its own connection. A cycle:
/// the holder sends, in one write, `LOCK.RELEASE` (the lock goes to the head of the line) and
/// `LOCK.ACQUIRE ... BLOCK 0` (it joins the tail), so every release finds exactly `queued`
/// waiters; then the new holder reads its `OK`.
struct Ring {
    name: String,
    conns: Vec<Raw>,
    holder: usize,
}

fn ring_token(i: usize) -> String {
    format!("bench-token-{i:012}")
}

impl Ring {
    fn new(server: &Server, admin: &mut Connection, queued: usize) -> Ring {
        let name = format!("ring-{queued}");
        let mut conns: Vec<Raw> = (0..=queued).map(|_| server.raw()).collect();
        conns[0].send(&["LOCK.ACQUIRE", &name, &ring_token(0), "600"]);
        assert_eq!(conns[0].line(), "+OK");
        let base = info_u64(admin, "clients", "blocked_clients");
        // Queue the others in ring order: each must be blocked before the next is sent.
        for (i, c) in conns.iter_mut().enumerate().skip(1) {
            c.send(&["LOCK.ACQUIRE", &name, &ring_token(i), "600", "BLOCK", "0"]);
            await_clients(admin, "blocked_clients", |n| n >= base + i as u64);
        }
        Ring {
            name,
            conns,
            holder: 0,
        }
    }

    fn cycle(&mut self) {
        let (i, name) = (self.holder, &self.name);
        let t = ring_token(i);
        let out = format!(
            "*3\r\n$12\r\nLOCK.RELEASE\r\n${}\r\n{name}\r\n${}\r\n{t}\r\n\
             *6\r\n$12\r\nLOCK.ACQUIRE\r\n${}\r\n{name}\r\n${}\r\n{t}\r\n$3\r\n600\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n",
            name.len(),
            t.len(),
            name.len(),
            t.len()
        );
        self.conns[i].write(out.as_bytes());
        assert_eq!(self.conns[i].line(), ":1");
        self.holder = (i + 1) % self.conns.len();
        assert_eq!(self.conns[self.holder].line(), "+OK");
    }

    fn queued(&self) -> usize {
        self.conns.len() - 1
    }
}

/// Release cost with each queue length in `queues`: all rings are set up at once and measured
/// in interleaved chunks of `cycles` (`rounds` each), so that machine noise hits all alike;
/// per ring the median chunk. Server time per call from commandstats, CPU per cycle from /proc.
pub fn release_cost(
    server: &Server,
    queues: &[usize],
    rounds: usize,
    cycles: usize,
) -> Vec<ReleaseCost> {
    let mut admin = server.conn();
    let base_clients = info_u64(&mut admin, "clients", "connected_clients");
    let mut rings: Vec<Ring> = queues
        .iter()
        .map(|&q| Ring::new(server, &mut admin, q))
        .collect();
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); rings.len()];
    for round in 0..=rounds {
        for (ring, samples) in rings.iter_mut().zip(&mut samples) {
            reset_stats(&mut admin);
            let cpu0 = server.cpu_secs();
            for _ in 0..cycles {
                ring.cycle();
            }
            let cpu = server.cpu_secs() - cpu0;
            let stats = commandstats(&mut admin);
            let per_call = |cmd: &str| {
                let (calls, usec) = stats[cmd];
                usec as f64 / calls as f64
            };
            // Round 0 warms up.
            if round > 0 {
                samples.push((
                    per_call("lock.release"),
                    per_call("lock.acquire"),
                    cpu * 1e6 / cycles as f64,
                ));
            }
        }
    }
    let result = rings
        .iter()
        .zip(samples)
        .map(|(ring, s)| ReleaseCost {
            queued: ring.queued(),
            release_us: median(s.iter().map(|x| x.0).collect()),
            acquire_us: median(s.iter().map(|x| x.1).collect()),
            cpu_us_per_cycle: median(s.iter().map(|x| x.2).collect()),
        })
        .collect();
    drop(rings);
    await_clients(&mut admin, "connected_clients", |n| n <= base_clients);
    result
}
