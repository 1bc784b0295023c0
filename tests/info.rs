//! `INFO rlock`: what waits now and what happened since load, as an operator graphs it. Every
//! figure asserted is a delta caused by the test's own steps.

mod common;
use common::raw::*;
use common::*;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

fn info(c: &mut Raw) -> HashMap<String, String> {
    let text = c.call(&["INFO", "rlock"]).text().unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("rlock_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn num(i: &HashMap<String, String>, field: &str) -> i64 {
    i.get(field)
        .unwrap_or_else(|| panic!("no rlock_{field} in {i:?}"))
        .parse()
        .unwrap()
}

/// Wait until `field` has grown by `by` over `before`.
fn grows(c: &mut Raw, before: &HashMap<String, String>, field: &str, by: i64) {
    let start = Instant::now();
    loop {
        let now = info(c);
        if num(&now, field) >= num(before, field) + by {
            assert_eq!(num(&now, field), num(before, field) + by, "{field}");
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "rlock_{field} never grew by {by}: {now:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn info_rlock_counts_what_happens() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let i0 = info(&mut c);
    assert_eq!(i0.get("python_signal").map(String::as_str), Some("auto"));
    for field in [
        "waiters",
        "locks_with_waiters",
        "hand_overs",
        "block_timeouts",
    ] {
        assert_eq!(num(&i0, field), 0, "{field}");
    }

    // At once, then a waiter queued: the gauges show it; a release hands it over.
    c.acquire("a", "t");
    assert_eq!(num(&info(&mut c), "acquired_at_once"), 1);
    let mut w = Raw::connect(&s);
    w.send(&[&["LOCK.ACQUIRE", "a", "w", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    let i1 = info(&mut c);
    assert_eq!(
        (num(&i1, "waiters"), num(&i1, "locks_with_waiters")),
        (1, 1)
    );
    assert_eq!(c.release("a", "t"), 1);
    assert_eq!(w.read("the waiter"), R::ok());
    let i2 = info(&mut c);
    assert_eq!(num(&i2, "waiters"), 0);
    assert_eq!(num(&i2, "hand_overs"), 1);
    assert_eq!(num(&i2, "acquired_after_waiting"), 1);
    // Nobody could wait the python way: the release after it is not signalled.
    assert_eq!(c.release("a", "w"), 1);
    assert_eq!(
        num(&info(&mut c), "python_signals_skipped"),
        num(&i2, "python_signals_skipped") + 1
    );

    // A BLOCK that runs out, a CLIENT UNBLOCK, a hang-up.
    c.acquire("b", "t");
    let before = info(&mut c);
    assert_eq!(
        w.call(&["LOCK.ACQUIRE", "b", "w", "60", "BLOCK", "20"]),
        R::nil()
    );
    grows(&mut c, &before, "block_timeouts", 1);
    let mut u = Raw::connect(&s);
    let id = u.call(&["CLIENT", "ID"]).int().to_string();
    u.send(&[&["LOCK.ACQUIRE", "b", "u", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    assert_eq!(c.call(&["CLIENT", "UNBLOCK", &id]), R::Int(1));
    assert_eq!(u.read("unblocked"), R::nil());
    let mut gone = Raw::connect(&s);
    gone.send(&[&["LOCK.ACQUIRE", "b", "g", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    drop(gone);
    s.wait_blocked(0);
    let i3 = info(&mut c);
    assert_eq!(
        num(&i3, "waiters_unblocked"),
        num(&before, "waiters_unblocked") + 1
    );
    grows(&mut c, &before, "waiters_disconnected", 1);

    // A foreign DEL, an expiry, and a python waiter signalled.
    let before = info(&mut c);
    assert_eq!(c.call(&["DEL", "lock:b"]), R::Int(1));
    grows(&mut c, &before, "foreign_deletes_observed", 1);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "e", "t", "1"]), R::ok());
    assert_eq!(c.call(&["PEXPIRE", "lock:e", "1"]), R::Int(1));
    let start = Instant::now();
    while c.call(&["EXISTS", "lock:e"]) != R::Int(0) {
        assert!(start.elapsed() < DEADLINE);
        thread::sleep(Duration::from_millis(2));
    }
    grows(&mut c, &before, "expiries_observed", 1);
    c.acquire("p", "t");
    c.python_tries("p");
    let before = info(&mut c);
    assert_eq!(c.release("p", "t"), 1);
    assert_eq!(
        num(&info(&mut c), "python_signals_sent"),
        num(&before, "python_signals_sent") + 1
    );

    // The configuration is shown as set.
    assert_eq!(
        c.call(&["CONFIG", "SET", "rlock.python-signal", "never"]),
        R::ok()
    );
    assert_eq!(
        info(&mut c).get("python_signal").map(String::as_str),
        Some("never")
    );
}

fn lock_info(c: &mut Raw, name: &str) -> Vec<R> {
    match c.call(&["LOCK.INFO", name]) {
        R::Array(Some(items)) => items,
        other => panic!("LOCK.INFO {name}: {other:?}"),
    }
}

fn field(items: &[R], name: &str) -> R {
    let i = items
        .iter()
        .position(|r| *r == R::Bulk(Some(name.as_bytes().to_vec())))
        .unwrap_or_else(|| panic!("no {name} in {items:?}"));
    items[i + 1].clone()
}

#[test]
fn lock_info_shows_owner_lease_waiters_and_python() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    // Free.
    let free = lock_info(&mut c, "n");
    assert_eq!(free.len(), 12, "six field/value pairs: {free:?}");
    assert_eq!(field(&free, "bound_to"), R::nil());
    assert_eq!(field(&free, "fence"), R::nil());
    assert_eq!(field(&free, "owner"), R::nil());
    assert_eq!(field(&free, "ttl"), R::Int(-2));
    assert_eq!(field(&free, "waiters"), R::Int(0));
    assert_eq!(field(&free, "python"), R::Int(0));
    // Held, with two module waiters and a python-redis-lock client that tried.
    c.acquire("n", "holder");
    let mut w1 = Raw::connect(&s);
    w1.send(&[&["LOCK.ACQUIRE", "n", "w1", "60", "BLOCK", "0"]]);
    let mut w2 = Raw::connect(&s);
    w2.send(&[&["LOCK.ACQUIRE", "n", "w2", "60", "BLOCK", "0"]]);
    s.wait_blocked(2);
    c.python_tries("n");
    let held = lock_info(&mut c, "n");
    assert_eq!(field(&held, "owner"), R::Bulk(Some(b"holder".to_vec())));
    let R::Int(ttl) = field(&held, "ttl") else {
        panic!("{held:?}")
    };
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    assert_eq!(field(&held, "waiters"), R::Int(2));
    assert_eq!(field(&held, "python"), R::Int(1));
    // Without a lease (a python-redis-lock lock made with expire=None).
    assert_eq!(c.call(&["SET", "lock:forever", "py"]), R::ok());
    assert_eq!(field(&lock_info(&mut c, "forever"), "ttl"), R::Int(-1));
    // RESP3: a map.
    let mut r3 = redis::Client::open(format!("{}?protocol=resp3", s.url))
        .unwrap()
        .get_connection()
        .unwrap();
    let v: redis::Value = redis::cmd("LOCK.INFO").arg("n").query(&mut r3).unwrap();
    let redis::Value::Map(pairs) = v else {
        panic!("RESP3 LOCK.INFO is not a map: {v:?}")
    };
    assert_eq!(pairs.len(), 6);
    // Wrong arity, and a key of another type.
    assert!(matches!(c.call(&["LOCK.INFO"]), R::Error(_)));
    c.call(&["RPUSH", "lock:list", "x"]);
    let wrong = c.call(&["LOCK.INFO", "list"]);
    assert!(
        matches!(&wrong, R::Error(e) if e.starts_with("WRONGTYPE")),
        "{wrong:?}"
    );
}
