//! Workload 6, expiry handoff: the holder never releases; how long after its lease ends a
//! waiter of the same protocol holds the lock.

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::common::Server;
use crate::protocols::{Client, Proto, Shas};
use crate::stats::Dist;
use crate::{EXPIRY_ROUNDS, EXPIRY_TRIALS};

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The holder takes a lock for 1 s and never releases it; a waiter arrives at a point spread
/// over the lease and waits the protocol's way. The trials of a round start 10 ms apart, so
/// their leases end one by one rather than all in the same millisecond. Returns the
/// distribution, over the trials, of the milliseconds from the lease end (`PEXPIRETIME`) to the
/// waiter holding the lock.
pub fn expiry_handoff(server: &Server, shas: &Shas, proto: Proto) -> Dist {
    let mut admin = server.conn();
    let mut holder = Client::new(server, proto, shas, 999_999, 1);
    let mut delays = Dist::new();
    for round in 0..EXPIRY_ROUNDS {
        let mut trials = Vec::new();
        for i in 0..EXPIRY_TRIALS {
            let name = format!("e-{}-{round}-{i}", proto as u8);
            let taken: Value = holder.try_cmd(&name).query(&mut holder.con).unwrap();
            assert_eq!(taken, Value::Okay);
            let deadline: i64 = redis::cmd("PEXPIRETIME")
                .arg(format!("lock:{name}"))
                .query(&mut admin)
                .unwrap();
            let mut c = Client::new(server, proto, shas, i, 1);
            let arrive = Duration::from_millis((i * 900 / EXPIRY_TRIALS) as u64);
            let waiter = thread::spawn(move || {
                thread::sleep(arrive);
                c.acquire(&name);
                let at = unix_ms();
                c.release(&name);
                at
            });
            trials.push((waiter, deadline as f64));
            thread::sleep(Duration::from_millis(10));
        }
        for (waiter, deadline) in trials {
            delays.record(waiter.join().expect("waiter") - deadline);
        }
    }
    delays
}
