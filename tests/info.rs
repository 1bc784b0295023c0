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
