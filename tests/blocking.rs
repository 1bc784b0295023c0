//! Blocked LOCK.ACQUIRE: who wakes it, in what order, and who never gets the lock.

mod common;
use common::*;
use redis::Value;
use std::time::{Duration, Instant};

fn ok(c: &mut redis::Connection, name: &str, token: &str, ttl: u64) {
    let r: String = acquire(name, token, ttl, None).query(c).unwrap();
    assert_eq!(r, "OK");
}

#[test]
fn release_hands_the_lock_to_the_waiter_with_no_gap() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let waiter = spawn_blocked::<Option<String>>(&s, acquire("a", "waiter", 30, Some(10_000)));
    assert_eq!(release(&mut c, "a", "holder"), 1);
    // Already the owner when RELEASE returns: nobody could have slipped in.
    assert_eq!(owner(&mut c, "a").as_deref(), Some("waiter"));
    let ttl: i64 = redis::cmd("PTTL").arg("lock:a").query(&mut c).unwrap();
    assert!(
        (29_000..=30_000).contains(&ttl),
        "the waiter's own ttl, from the hand-over: {ttl}"
    );
    assert_eq!(waiter.wait().unwrap().as_deref(), Some("OK"));
    let signal: i64 = redis::cmd("EXISTS")
        .arg("lock-signal:a")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        signal, 0,
        "a hand-over does not signal: the lock never became free"
    );
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "t0", 60);
    let mut waiters = Vec::new();
    for i in 1..=5 {
        waiters.push(spawn::<Option<String>>(
            &s,
            acquire("a", &format!("t{i}"), 60, Some(0)),
        ));
        s.wait_blocked(i);
    }
    for i in 1..=5 {
        assert_eq!(release(&mut c, "a", &format!("t{}", i - 1)), 1);
        assert_eq!(owner(&mut c, "a"), Some(format!("t{i}")), "arrival order");
    }
    for w in waiters {
        assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    }
    s.wait_blocked(0);
}

#[test]
fn block_timeout_replies_nil_and_leaves_the_queue() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let started = Instant::now();
    let r: Option<String> = acquire("a", "w", 60, Some(200))
        .query(&mut s.conn())
        .unwrap();
    assert_eq!(r, None);
    assert!(started.elapsed() >= Duration::from_millis(190));
    s.wait_blocked(0);
    release(&mut c, "a", "holder");
    assert_eq!(
        owner(&mut c, "a"),
        None,
        "the timed-out waiter was never handed the lock"
    );
}

#[test]
fn block_zero_waits_until_the_lock_is_free() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(0)));
    // Still waiting well after any short default would have run out.
    let still = Instant::now();
    while still.elapsed() < Duration::from_millis(1500) {
        assert_eq!(info_field(&mut c, "clients", "blocked_clients"), 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    release(&mut c, "a", "holder");
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
}

#[test]
fn inside_multi_and_scripts_block_is_one_attempt() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let (r,): (Option<String>,) = redis::pipe()
        .atomic()
        .add_command(acquire("a", "w", 60, Some(0)))
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None, "MULTI/EXEC: nil at once");
    let r: Option<String> = redis::cmd("EVAL")
        .arg("return redis.call('LOCK.ACQUIRE', KEYS[1], 'w', 60, 'BLOCK', 0)")
        .arg(1)
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None, "EVAL: nil at once");
    let lib = "#!lua name=locklib\nredis.register_function('try', function(keys, args) return redis.call('LOCK.ACQUIRE', keys[1], 'w', 60, 'BLOCK', 0) end)";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    let r: Option<String> = redis::cmd("FCALL")
        .arg("try")
        .arg(1)
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None, "FCALL: nil at once");
    // And a free lock is taken inside them.
    let r: Option<String> = redis::cmd("FCALL")
        .arg("try")
        .arg(1)
        .arg("free")
        .query(&mut c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    assert_eq!(info_field(&mut c, "clients", "blocked_clients"), 0);
}

#[test]
fn client_unblock_ends_the_wait_with_nil_and_the_lock_is_never_handed_over() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(0)));
    let n: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(w.id)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(w.wait().unwrap(), None);
    release(&mut c, "a", "holder");
    assert_eq!(owner(&mut c, "a"), None);
}

#[test]
fn killed_or_disconnected_waiters_leave_the_queue() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let killed = spawn_blocked::<Option<String>>(&s, acquire("a", "killed", 60, Some(0)));
    // A client that sends the command and hangs up.
    let mut raw =
        std::os::unix::net::UnixStream::connect(s.url.trim_start_matches("redis+unix://")).unwrap();
    use std::io::Write;
    raw.write_all(b"LOCK.ACQUIRE a hungup 60 BLOCK 0\r\n")
        .unwrap();
    s.wait_blocked(2);
    drop(raw);
    s.wait_blocked(1);
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(killed.id)
        .query(&mut c)
        .unwrap();
    assert!(killed.wait().is_err());
    s.wait_blocked(0);
    assert_eq!(release(&mut c, "a", "holder"), 1);
    assert_eq!(owner(&mut c, "a"), None, "nobody left to hand it to");
}

/// With Redis's active expiry off, only rlock's own timer at the lease's end can wake the waiter.
#[test]
fn a_waiter_gets_the_lock_when_the_holders_lease_runs_out() {
    let s = Server::start();
    let mut c = s.conn();
    let _: Value = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut c)
        .unwrap();
    ok(&mut c, "a", "holder", 1);
    let deadline: i64 = redis::cmd("PEXPIRETIME")
        .arg("lock:a")
        .query(&mut c)
        .unwrap();
    let w = spawn::<Option<String>>(&s, acquire("a", "w", 60, Some(8000)));
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    eprintln!(
        "expiry hand-over {} ms after the deadline",
        now_ms - deadline
    );
    assert_eq!(owner(&mut c, "a").as_deref(), Some("w"));
}

#[test]
fn renewal_moves_the_waiters_wake_up() {
    let s = Server::start();
    let mut c = s.conn();
    let _: Value = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut c)
        .unwrap();
    ok(&mut c, "a", "holder", 1);
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(0)));
    let r: i64 = redis::cmd("LOCK.RENEW")
        .arg("a")
        .arg("holder")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    // The first timer fires at the old deadline, finds the lease renewed, and re-arms.
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "a").as_deref(), Some("w"));
}

#[test]
fn foreign_deletes_and_flushes_wake_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    let cases: &[(&str, &[&str])] = &[
        ("DEL", &["DEL", "lock:a"]),
        ("UNLINK", &["UNLINK", "lock:a"]),
        ("FLUSHDB", &["FLUSHDB"]),
        ("FLUSHALL", &["FLUSHALL"]),
        ("FLUSHALL ASYNC", &["FLUSHALL", "ASYNC"]),
        ("LOCK.RESETALL", &["LOCK.RESETALL"]),
        ("python release", &["EVAL", "redis.call('del', KEYS[2]); redis.call('lpush', KEYS[2], 1); redis.call('pexpire', KEYS[2], 1000); redis.call('del', KEYS[1]); return 0", "2", "lock:a", "lock-signal:a"]),
        ("expire in the past", &["PEXPIREAT", "lock:a", "1"]),
    ];
    for (what, cmd) in cases {
        ok(&mut c, "a", "holder", 60);
        let w = spawn_blocked::<Option<String>>(&s, acquire("a", "w", 60, Some(8000)));
        let mut q = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            q.arg(*a);
        }
        let _: Value = q.query(&mut c).unwrap();
        assert_eq!(w.wait().unwrap().as_deref(), Some("OK"), "{what}");
        assert_eq!(owner(&mut c, "a").as_deref(), Some("w"), "{what}");
        release(&mut c, "a", "w");
    }
}

#[test]
fn waiters_wait_in_their_own_database() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "db0-holder", 60);
    let mut w1 = redis::cmd("SELECT");
    w1.arg(1);
    let mut c1 = s.conn();
    let _: () = w1.query(&mut c1).unwrap();
    ok(&mut c1, "a", "db1-holder", 60);
    let mut pipe_db1 = redis::pipe();
    pipe_db1
        .cmd("SELECT")
        .arg(1)
        .ignore()
        .add_command(acquire("a", "w1", 60, Some(8000)));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut wc = s.conn();
    std::thread::spawn(move || {
        let r: redis::RedisResult<(Option<String>,)> = pipe_db1.query(&mut wc);
        tx.send(r).ok();
    });
    s.wait_blocked(1);
    release(&mut c, "a", "db0-holder");
    assert_eq!(
        owner(&mut c, "a"),
        None,
        "db 0's release does not serve db 1's waiter"
    );
    release(&mut c1, "a", "db1-holder");
    let (r,) = rx.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    assert_eq!(owner(&mut c1, "a").as_deref(), Some("w1"));
}

#[test]
fn a_waiter_with_the_owners_token_is_answered_at_once() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "t", 60);
    let r: Option<String> = acquire("a", "t", 90, Some(0)).query(&mut c).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    assert_eq!(info_field(&mut c, "clients", "blocked_clients"), 0);
}

#[test]
fn a_new_arrival_does_not_jump_the_queue() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let w = spawn_blocked::<Option<String>>(&s, acquire("a", "first", 60, Some(8000)));
    // Freed by a foreign DEL and taken at once in one transaction, before the deferred
    // hand-over runs: the queued waiter still goes first.
    let (_, r): (i64, Option<String>) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("lock:a")
        .add_command(acquire("a", "late", 60, None))
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None, "the late arrival waits its turn");
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "a").as_deref(), Some("first"));
}

/// Blocked waiters cost Redis ~35 KB each (the reply client it keeps per module-blocked
/// client); all of it, and the module's share, must come back when they leave, round after
/// round. (Redis 7.0 hands that memory back gradually after the clients have gone, at a few
/// MB/s, so the test waits for it with a deadline.)
#[test]
fn waiters_that_block_and_disconnect_leave_no_memory_behind() {
    let s = Server::start();
    let mut c = s.conn();
    const N: usize = 1000;
    const LOCKS: usize = 100;
    for i in 0..LOCKS {
        let _: Option<String> = acquire(&format!("l{i}"), "holder", 600, None)
            .query(&mut c)
            .unwrap();
    }
    let mut settled = Vec::new();
    for round in 0..3 {
        let before = info_field(&mut c, "memory", "used_memory");
        let mut conns: Vec<redis::Connection> = (0..N).map(|_| s.conn()).collect();
        for (i, wc) in conns.iter_mut().enumerate() {
            let cmd = acquire(&format!("l{}", i % LOCKS), &format!("w{i}"), 60, Some(0));
            wc.send_packed_command(&cmd.get_packed_command()).unwrap();
        }
        s.wait_blocked(N as i64);
        let blocked = info_field(&mut c, "memory", "used_memory");
        if round == 1 {
            // Leave by CLIENT KILL; the other rounds hang up.
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query(&mut c)
                .unwrap();
        }
        conns.clear();
        s.wait_blocked(0);
        let start = std::time::Instant::now();
        let after = loop {
            let now = info_field(&mut c, "memory", "used_memory");
            if now - before < 256 * 1024 {
                break now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "memory not given back: before {before}, blocked {blocked}, now {now}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!("round {round}: used_memory before {before}, {N} blocked {blocked}, after they left {after}");
        settled.push(after);
    }
    let growth = settled[2] - settled[1];
    assert!(
        growth.abs() < 16 * 1024,
        "memory grows round after round: {settled:?}"
    );
    for i in 0..LOCKS {
        assert_eq!(release(&mut c, &format!("l{i}"), "holder"), 1);
        assert_eq!(
            owner(&mut c, &format!("l{i}")),
            None,
            "nobody left to hand l{i} to"
        );
    }
}

/// The lock is written for a waiter, but its connection is gone before the reply goes out
/// (both events in one event-loop pass): the module takes the lock back and hands it on
/// rather than leaving it held for the vanished client's whole lease.
#[test]
fn a_grant_to_a_client_that_vanished_is_taken_back() {
    use std::io::Write;
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let sock = s.url.trim_start_matches("redis+unix://").to_string();
    let mut vanishing = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    vanishing
        .write_all(b"LOCK.ACQUIRE a vanishing 600 BLOCK 0\r\n")
        .unwrap();
    s.wait_blocked(1);
    let next = spawn_blocked::<Option<String>>(&s, acquire("a", "next", 60, Some(0)));
    // Stall the server; meanwhile queue a release and then the hang-up, so that the next pass
    // of its event loop sees both, in that order.
    let mut staller = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    staller.write_all(b"DEBUG SLEEP 0.5\r\n").unwrap();
    let mut releaser = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let the server enter the sleep
    releaser.write_all(b"LOCK.RELEASE a holder\r\n").unwrap();
    drop(vanishing);
    assert_eq!(
        next.wait().unwrap().as_deref(),
        Some("OK"),
        "the lock went on to the next waiter"
    );
    assert_eq!(owner(&mut c, "a").as_deref(), Some("next"));
}

/// A `CLIENT UNBLOCK` handled in the same event-loop pass as the grant, after it: the waiter
/// is no longer waiting (it holds the lock, its `OK` is on its way), so there is nothing to
/// unblock (0), and the waiter gets exactly one reply, `OK`, agreeing with `LOCK.OWNER`.
/// (The server's own unblock racing the module's used to give two replies on 7.0 and abort
/// 7.2.6.)
#[test]
fn client_unblock_racing_a_grant_finds_nothing_to_unblock() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, "a", "holder", 60);
    let first = spawn_blocked::<Option<String>>(&s, acquire("a", "first", 60, Some(0)));
    let second = spawn_blocked::<Option<String>>(&s, acquire("a", "second", 60, Some(0)));
    let (released, unblocked): (i64, i64) = redis::pipe()
        .cmd("LOCK.RELEASE")
        .arg("a")
        .arg("holder")
        .cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(first.id)
        .query(&mut c)
        .unwrap();
    assert_eq!((released, unblocked), (1, 0));
    assert_eq!(first.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "a").as_deref(), Some("first"));
    assert_eq!(release(&mut c, "a", "first"), 1);
    assert_eq!(second.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "a").as_deref(), Some("second"));
}
