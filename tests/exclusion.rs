//! One holder (PROTOCOL promise 1): a lock handed to a waiter is never handed to a second
//! token while the first may have been told `OK`, whatever else happens in the same
//! event-loop pass (hang-ups, kills).

mod common;
use common::raw::*;
use common::*;
use std::time::Duration;

/// `n` raw connections, each queued in `LOCK.ACQUIRE x <token> 60 BLOCK 0`, in order, with
/// their client ids.
fn queue(s: &Server, tokens: &[&str]) -> Vec<(Raw, String)> {
    let mut waiters = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut c = Raw::connect(s);
        let id = c.call(&["CLIENT", "ID"]).int().to_string();
        c.send(&[&["LOCK.ACQUIRE", "x", token, "60", "BLOCK", "0"]]);
        s.wait_blocked(i as i64 + 1);
        waiters.push((c, id));
    }
    waiters
}

/// H holds `x`; A and B wait with token T, C with U. One write from H releases and kills A:
/// A's grant is B's too, so B is told `OK`, T keeps the lock, and C goes on waiting.
#[test]
fn a_same_token_group_keeps_the_lock_when_its_first_member_hangs_up_in_the_same_pass() {
    let s = Server::start();
    let mut h = Raw::connect(&s);
    h.acquire("x", "H");
    let mut w = queue(&s, &["T", "T", "U"]);
    let a_id = w[0].1.clone();
    h.send(&[
        &["LOCK.RELEASE", "x", "H"][..],
        &["CLIENT", "KILL", "ID", a_id.as_str()][..],
    ]);
    assert_eq!(h.read("release"), R::Int(1));
    assert_eq!(h.read("kill"), R::Int(1));
    w[1].0.answered_once(&R::ok(), "B, with A's token");
    assert_eq!(
        h.owner("x").as_deref(),
        Some("T"),
        "T was told OK: T holds x"
    );
    s.wait_blocked(1);
    assert_eq!(
        w[2].0.next(Duration::from_millis(100)),
        Err(End::Quiet),
        "C must not be handed a lock T holds"
    );
    assert_eq!(h.release("x", "T"), 1);
    w[2].0.answered_once(&R::ok(), "C after T's release");
    assert_eq!(h.owner("x").as_deref(), Some("U"));
}

/// The whole group hangs up in the pass that grants it: nobody was told `OK`, so the lock is
/// taken back and goes to C.
#[test]
fn a_same_token_group_that_vanishes_whole_gives_the_lock_to_the_next() {
    let s = Server::start();
    let mut h = Raw::connect(&s);
    h.acquire("x", "H");
    let mut w = queue(&s, &["T", "T", "U"]);
    let (a, b) = (w[0].1.clone(), w[1].1.clone());
    h.send(&[
        &["LOCK.RELEASE", "x", "H"][..],
        &["CLIENT", "KILL", "ID", a.as_str()][..],
        &["CLIENT", "KILL", "ID", b.as_str()][..],
    ]);
    assert_eq!(h.read("release"), R::Int(1));
    assert_eq!(h.read("kill A"), R::Int(1));
    assert_eq!(h.read("kill B"), R::Int(1));
    w[2].0
        .answered_once(&R::ok(), "C, after the T group vanished unanswered");
    assert_eq!(h.owner("x").as_deref(), Some("U"));
    s.wait_blocked(0);
}

/// A and B wait with token T and `BIND`, C with U. One write releases and kills B, the group's
/// last member, whose acquire would decide the binding: B was never answered, so the binding
/// is A's (the last acquire answered), T keeps the lock while A lives, and C gets it when A goes.
#[test]
fn a_bound_group_member_killed_before_its_reply_binds_nothing() {
    let s = Server::start();
    let mut h = Raw::connect(&s);
    h.acquire("x", "H");
    let mut w = Vec::new();
    for (i, (token, bind)) in [("T", true), ("T", true), ("U", false)].iter().enumerate() {
        let mut c = Raw::connect(&s);
        let id = c.call(&["CLIENT", "ID"]).int().to_string();
        let mut cmd = vec!["LOCK.ACQUIRE", "x", token, "60", "BLOCK", "0"];
        if *bind {
            cmd.push("BIND");
        }
        c.send(&[&cmd]);
        s.wait_blocked(i as i64 + 1);
        w.push((c, id));
    }
    let b = w[1].1.clone();
    h.send(&[
        &["LOCK.RELEASE", "x", "H"][..],
        &["CLIENT", "KILL", "ID", b.as_str()][..],
    ]);
    assert_eq!(h.read("release"), R::Int(1));
    assert_eq!(h.read("kill B"), R::Int(1));
    w[0].0.answered_once(&R::ok(), "A");
    s.wait_blocked(1);
    assert_eq!(
        h.owner("x").as_deref(),
        Some("T"),
        "A was told OK: T holds x"
    );
    assert_eq!(
        w[2].0.next(Duration::from_millis(100)),
        Err(End::Quiet),
        "C must not be handed a lock T holds"
    );
    let a = w[0].1.clone();
    assert_eq!(h.call(&["CLIENT", "KILL", "ID", a.as_str()]), R::Int(1));
    w[2].0.answered_once(&R::ok(), "C, once A (bound) is gone");
    assert_eq!(h.owner("x").as_deref(), Some("U"));
}
