//! What an operator asks: durability across kill -9 with AOF, DEBUG RELOAD and SWAPDB with
//! waiters blocked (ACL: tests/acl.rs).

mod common;
use common::*;

#[test]
fn held_locks_survive_kill_9_with_aof_and_waiters_see_an_error() {
    let mut s = Server::with(aof_options(None));
    let mut c = s.conn();
    let _: String = acquire("a", "tok-a", 300, None).query(&mut c).unwrap();
    let _: String = acquire("b", "tok-b", 600, None).query(&mut c).unwrap();
    let _: String = acquire("gone", "tok-g", 300, None).query(&mut c).unwrap();
    release(&mut c, "gone", "tok-g");
    let expiry_a: i64 = redis::cmd("PEXPIRETIME")
        .arg("lock:a")
        .query(&mut c)
        .unwrap();
    let expiry_b: i64 = redis::cmd("PEXPIRETIME")
        .arg("lock:b")
        .query(&mut c)
        .unwrap();
    let w1 = spawn_blocked::<Option<String>>(&s, acquire("a", "w1", 60, Some(0)));
    let w2 = spawn_blocked::<Option<String>>(&s, acquire("b", "w2", 60, Some(0)));

    s.kill();
    assert!(w1.wait().is_err(), "a waiter never gets a false OK");
    assert!(w2.wait().is_err());

    let s2 = Server::with(aof_options(Some(s.dir.clone())));
    let mut c = s2.conn();
    assert_eq!(owner(&mut c, "a").as_deref(), Some("tok-a"));
    assert_eq!(owner(&mut c, "b").as_deref(), Some("tok-b"));
    assert_eq!(owner(&mut c, "gone"), None);
    let a: i64 = redis::cmd("PEXPIRETIME")
        .arg("lock:a")
        .query(&mut c)
        .unwrap();
    let b: i64 = redis::cmd("PEXPIRETIME")
        .arg("lock:b")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        (a, b),
        (expiry_a, expiry_b),
        "absolute expiry: no drift on replay"
    );
    // And the module works on the restarted server.
    let w = spawn_blocked::<Option<String>>(&s2, acquire("a", "w3", 60, Some(10_000)));
    assert_eq!(release(&mut c, "a", "tok-a"), 1);
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
}

#[test]
fn debug_reload_with_waiters_blocked() {
    let s = Server::start();
    let mut c = s.conn();
    let _: String = acquire("a", "holder", 60, None).query(&mut c).unwrap();
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(0)));
    let _: String = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(
        owner(&mut c, "a").as_deref(),
        Some("holder"),
        "reloaded as it was"
    );
    assert_eq!(
        info_field(&mut c, "clients", "blocked_clients"),
        1,
        "still waiting"
    );
    assert_eq!(release(&mut c, "a", "holder"), 1);
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "a").as_deref(), Some("w"));
}

#[test]
fn swapdb_with_waiters_blocked() {
    let s = Server::start();
    let mut c = s.conn();
    let _: String = acquire("a", "holder", 60, None).query(&mut c).unwrap();
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(10_000)));
    // Database 0 now holds what was database 1 (nothing): lock a is free there.
    let _: String = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut c).unwrap();
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    // The waiter's own database (0) shows it as the owner: it can see the lock it was handed.
    assert_eq!(owner(&mut c, "a").as_deref(), Some("w"));
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(
        owner(&mut c, "a").as_deref(),
        Some("holder"),
        "the old holder's lock moved to db 1"
    );
}

#[test]
fn eviction_frees_the_lock_for_a_waiter() {
    let s = Server::with(Options {
        args: vec!["--maxmemory-policy".into(), "allkeys-random".into()],
        ..Options::default()
    });
    let mut c = s.conn();
    let _: String = acquire("a", "holder", 600, None).query(&mut c).unwrap();
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(0)));
    // Squeeze memory until lock:a is evicted (allkeys-random picks keys at random).
    let used = info_field(&mut c, "memory", "used_memory");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 200_000)
        .query(&mut c)
        .unwrap();
    let start = std::time::Instant::now();
    let mut i = 0;
    loop {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(vec![b'x'; 2000])
            .query(&mut c);
        let _ = r;
        i += 1;
        // Stop squeezing as soon as the holder's lock is gone: squeezing on could evict the
        // waiter's lock right after the hand-over too (allkeys-random), before it is seen.
        let owner_now = owner(&mut c, "a");
        if owner_now.as_deref() != Some("holder") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "lock:a never evicted/handed over"
        );
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
}
