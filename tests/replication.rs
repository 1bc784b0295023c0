//! Replicas and the AOF get plain core commands with absolute times: a replica needs no module.

mod common;
use common::*;

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn pexpiretime(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap()
}

#[test]
fn a_replica_without_the_module_mirrors_every_lock() {
    let primary = Server::with(Options {
        tcp: true,
        ..Options::default()
    });
    let replica = replica_of(&primary, false);
    let mut p = primary.conn();
    let mut r = replica.conn();

    // Acquire: SET ... PXAT, with the very same absolute expiry on both sides.
    let _: String = acquire("a", "t1", 60, None).query(&mut p).unwrap();
    sync_replicas(&mut p, 1);
    assert_eq!(get(&mut r, "lock:a").as_deref(), Some("t1"));
    assert_eq!(pexpiretime(&mut r, "lock:a"), pexpiretime(&mut p, "lock:a"));

    // Renew: PEXPIREAT.
    let _: i64 = redis::cmd("LOCK.RENEW")
        .arg("a")
        .arg("t1")
        .arg(600)
        .query(&mut p)
        .unwrap();
    let _: String = acquire("a", "t1", 900, None).query(&mut p).unwrap(); // re-acquire refreshes
    sync_replicas(&mut p, 1);
    assert_eq!(pexpiretime(&mut r, "lock:a"), pexpiretime(&mut p, "lock:a"));

    // Hand-over to a waiter: the new owner and its lease.
    let w = spawn_blocked::<Option<String>>(&primary, acquire("a", "t2", 30, Some(10_000)));
    release(&mut p, "a", "t1");
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    sync_replicas(&mut p, 1);
    assert_eq!(get(&mut r, "lock:a").as_deref(), Some("t2"));
    assert_eq!(pexpiretime(&mut r, "lock:a"), pexpiretime(&mut p, "lock:a"));

    // Release with nobody waiting but a python-redis-lock client that tried: DEL, and the
    // python signal list with its expiry.
    python_tries(&mut p, "a");
    release(&mut p, "a", "t2");
    sync_replicas(&mut p, 1);
    assert_eq!(get(&mut r, "lock:a"), None);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("lock-signal:a")
        .arg(0)
        .arg(-1)
        .query(&mut r)
        .unwrap();
    assert_eq!(list, vec!["1"]);
    assert_eq!(
        pexpiretime(&mut r, "lock-signal:a"),
        pexpiretime(&mut p, "lock-signal:a")
    );

    // RESETALL
    let _: String = acquire("b", "t", 60, None).query(&mut p).unwrap();
    let n: i64 = redis::cmd("LOCK.RESETALL").query(&mut p).unwrap();
    assert_eq!(n, 1);
    sync_replicas(&mut p, 1);
    assert_eq!(get(&mut r, "lock:b"), None);

    // The replica never saw a command it did not know.
    let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
    assert!(info.contains("master_link_status:up"), "{info}");
    assert!(
        !replica.log().contains("Unknown command"),
        "{}",
        replica.log()
    );
    let cs: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut r)
        .unwrap();
    for line in cs.lines().filter(|l| l.starts_with("cmdstat_")) {
        assert!(
            line.ends_with("rejected_calls=0,failed_calls=0"),
            "replica: {line}"
        );
    }
    assert!(
        !replica.log().contains("CRITICAL"),
        "replica answered its primary with an error: {}",
        replica.log()
    );
}

#[test]
fn the_aof_holds_only_core_commands_with_absolute_times() {
    let s = Server::with(aof_options(None));
    let mut c = s.conn();
    let _: String = acquire("a", "t1", 60, None).query(&mut c).unwrap();
    let _: i64 = redis::cmd("LOCK.RENEW")
        .arg("a")
        .arg("t1")
        .arg(120)
        .query(&mut c)
        .unwrap();
    python_tries(&mut c, "a");
    release(&mut c, "a", "t1");
    let mut aof = String::new();
    for entry in std::fs::read_dir(s.dir.join("appendonlydir")).unwrap() {
        let path = entry.unwrap().path();
        aof.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
    }
    let upper = aof.to_uppercase();
    assert!(
        !upper.contains("LOCK.ACQUIRE")
            && !upper.contains("LOCK.RENEW")
            && !upper.contains("LOCK.RELEASE"),
        "{aof}"
    );
    assert!(upper.contains("PXAT"), "SET with an absolute expiry: {aof}");
    assert!(upper.contains("PEXPIREAT"), "renewal as PEXPIREAT: {aof}");
    assert!(upper.contains("LPUSH"), "the python signal: {aof}");
}

/// A lock taken on the primary survives its promotion: the replica, running without the
/// module, kept it; promoted and given the module (`MODULE LOAD`), it serves waiters.
#[test]
fn held_locks_survive_failover_to_a_replica_without_the_module() {
    let primary = Server::with(Options {
        tcp: true,
        ..Options::default()
    });
    let replica = replica_of(&primary, false);
    let mut p = primary.conn();
    let _: String = acquire("a", "t1", 60, None).query(&mut p).unwrap();
    sync_replicas(&mut p, 1);
    let expiry = pexpiretime(&mut p, "lock:a");
    drop(primary);
    let mut r = replica.conn();
    let _: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    let _: String = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(module_path().display().to_string())
        .query(&mut r)
        .unwrap();
    assert_eq!(owner(&mut r, "a").as_deref(), Some("t1"));
    assert_eq!(pexpiretime(&mut r, "lock:a"), expiry, "no TTL drift");
    let w = spawn_blocked::<Option<String>>(&replica, acquire("a", "t2", 60, Some(10_000)));
    assert_eq!(release(&mut r, "a", "t1"), 1);
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut r, "a").as_deref(), Some("t2"));
}
