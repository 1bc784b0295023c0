//! Workload 7a, waiter memory: `used_memory` of 10,000 clients idle, with their blocking
//! command held back by `CLIENT PAUSE WRITE`, blocked in `LOCK.ACQUIRE ... BLOCK 0`, and right
//! after `CLIENT UNBLOCK`; the same clients blocked in BLPOP for reference.

use std::thread;
use std::time::Duration;

use redis::{Connection, Value};

use crate::common::Server;
use crate::server::{await_clients, info_u64, Raw, ServerExt};
use crate::stats::median;

/// `used_memory` once Redis's client cron has settled every client's buffers: query buffers are
/// trimmed after 2 s idle, reply buffers shrink on the first cron pass. Median of 3 samples.
fn settled_memory(admin: &mut Connection) -> f64 {
    thread::sleep(Duration::from_millis(4500));
    let samples = (0..3)
        .map(|i| {
            if i > 0 {
                thread::sleep(Duration::from_millis(400));
            }
            info_u64(admin, "memory", "used_memory") as f64
        })
        .collect();
    median(samples)
}

/// `used_memory` of one population of clients in each state.
pub struct MemStates {
    /// Connected, idle (after `CLIENT ID`).
    pub idle: f64,
    /// The blocking command sent while `CLIENT PAUSE WRITE` holds it back: Redis keeps the
    /// parsed command (argv) and a list node, and the module has not run yet.
    pub postponed: Option<f64>,
    /// Blocked.
    pub blocked: f64,
    /// Right after `CLIENT UNBLOCK` of every one of them: connected and idle again.
    pub unblocked: f64,
}

pub struct Memory {
    pub waiters: usize,
    pub locks: usize,
    pub lock: MemStates,
    /// The same clients blocked in BLPOP: Redis's own blocked-client cost, for reference.
    pub blpop: MemStates,
}

impl MemStates {
    /// Everything a waiter adds to an idle client.
    pub fn total(&self, n: usize) -> f64 {
        (self.blocked - self.idle) / n as f64
    }
    /// What leaving the queue frees again. Redis 7.0 keeps the two client objects that
    /// `RedisModule_BlockClient` took from its temp-client pool in that pool, and trims the pool
    /// (50 per server cron, from the second cron on) only later, so they are still counted
    /// right after the unblock.
    pub fn released(&self, n: usize) -> f64 {
        (self.blocked - self.unblocked) / n as f64
    }
    /// What stays allocated in Redis after the waiters left.
    pub fn pooled(&self, n: usize) -> f64 {
        (self.unblocked - self.idle) / n as f64
    }
    /// The parsed command Redis keeps for a client whose command waits.
    pub fn argv(&self, n: usize) -> Option<f64> {
        self.postponed.map(|p| (p - self.idle) / n as f64)
    }
    /// The module's waiter state plus Redis's blocked-client handle: what leaving the queue
    /// frees, minus the parsed command.
    pub fn own(&self, n: usize) -> Option<f64> {
        self.argv(n).map(|a| self.released(n) - a)
    }
}

/// `waiters` connections: idle; with the blocking command held back by `CLIENT PAUSE WRITE`
/// (LOCK.ACQUIRE only); blocked; right after `CLIENT UNBLOCK`. First with BLPOP on `locks`
/// keys (reference), then with `LOCK.ACQUIRE ... BLOCK 0` on `locks` held locks. Runs with
/// `hz 1` so that Redis's crons do not trim buffers or pools between two samples.
pub fn waiter_memory(server: &Server, waiters: usize, locks: usize) -> Memory {
    let mut admin = server.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("hz")
        .arg(1)
        .exec(&mut admin)
        .unwrap();
    for j in 0..locks {
        let r: Value = redis::cmd("LOCK.ACQUIRE")
            .arg(format!("m-{j}"))
            .arg("holder")
            .arg(600)
            .query(&mut admin)
            .unwrap();
        assert_eq!(r, Value::Okay);
    }
    let base_clients = info_u64(&mut admin, "clients", "connected_clients");
    let base_blocked = info_u64(&mut admin, "clients", "blocked_clients");
    let all_blocked = |admin: &mut Connection| {
        await_clients(admin, "blocked_clients", |n| {
            n >= base_blocked + waiters as u64
        })
    };
    let measure = |admin: &mut Connection, pause: bool, block: &dyn Fn(usize) -> Vec<String>| {
        let mut conns: Vec<Raw> = (0..waiters).map(|_| server.raw()).collect();
        for c in &mut conns {
            c.send(&["CLIENT", "ID"]);
        }
        let ids: Vec<String> = conns
            .iter_mut()
            .map(|c| c.line()[1..].to_string())
            .collect();
        let idle = settled_memory(admin);
        if pause {
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(600_000)
                .arg("WRITE")
                .exec(admin)
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let args = block(i);
            c.send(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        all_blocked(admin);
        let postponed = pause.then(|| {
            let m = settled_memory(admin);
            redis::cmd("CLIENT").arg("UNPAUSE").exec(admin).unwrap();
            m
        });
        all_blocked(admin);
        let blocked = settled_memory(admin);
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("CLIENT").arg("UNBLOCK").arg(id);
            }
            let unblocked: Vec<i64> = pipe.query(admin).unwrap();
            assert!(unblocked.iter().all(|&x| x == 1), "CLIENT UNBLOCK");
        }
        let unblocked = info_u64(admin, "memory", "used_memory") as f64;
        drop(conns);
        await_clients(admin, "connected_clients", |n| n <= base_clients);
        MemStates {
            idle,
            postponed,
            blocked,
            unblocked,
        }
    };
    // BLPOP first, while Redis's temp-client pool is empty and not being trimmed.
    let blpop = measure(&mut admin, false, &|i| {
        vec![
            "BLPOP".into(),
            format!("lock-signal:q-{}", i % locks),
            "0".into(),
        ]
    });
    let lock = measure(&mut admin, true, &|i| {
        vec![
            "LOCK.ACQUIRE".into(),
            format!("m-{}", i % locks),
            format!("bench-token-{i:012}"),
            "600".into(),
            "BLOCK".into(),
            "0".into(),
        ]
    });
    redis::cmd("LOCK.RESETALL").exec(&mut admin).unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("hz")
        .arg(10)
        .exec(&mut admin)
        .unwrap();
    Memory {
        waiters,
        locks,
        lock,
        blpop,
    }
}
