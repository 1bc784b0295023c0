//! Every LOCK.ACQUIRE gets exactly one reply, and that reply agrees with LOCK.OWNER afterwards:
//! for every way a wait can end, and for every race of those with a grant in one event-loop pass.
//!
//! The waiters here are raw connections: RESP is written and parsed by hand, so every reply is
//! counted. After a waiter's reply the test sends PING on the same connection and requires the
//! very next reply to be `+PONG`: a second reply to the same LOCK.ACQUIRE would show up as a
//! shifted stream. Every read has a deadline, so a missing reply fails rather than hangs.

mod common;
use common::raw::*;
use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn blocked(s: &Server) -> i64 {
    info_field(&mut s.conn(), "clients", "blocked_clients")
}

/// A raw connection blocked in `LOCK.ACQUIRE name token 60 BLOCK ms`, and its client id.
fn waiter(s: &Server, name: &str, token: &str, block_ms: u64) -> (Raw, i64) {
    let before = blocked(s);
    let mut w = Raw::connect(s);
    let id = w.call(&["CLIENT", "ID"]).int();
    w.send(&[&[
        "LOCK.ACQUIRE",
        name,
        token,
        "60",
        "BLOCK",
        &block_ms.to_string(),
    ]]);
    s.wait_blocked(before + 1);
    (w, id)
}

fn tcp_server() -> Server {
    Server::with(Options {
        tcp: true,
        ..Options::default()
    })
}

/// `got` was the waiter's only reply (`next`, the reply to the PING sent after it, is PONG), and
/// it agrees with the owner: OK if and only if the waiter's `token` owns the lock.
fn one_reply_agreeing_with_the_owner(
    what: &str,
    got: &R,
    next: &R,
    owner: Option<&str>,
    token: &str,
) {
    assert_eq!(
        next,
        &R::Status("PONG".into()),
        "{what}: two replies, {got:?} then {next:?}"
    );
    assert_eq!(
        *got == R::ok(),
        owner == Some(token),
        "{what}: the waiter's reply {got:?} disagrees with LOCK.OWNER {owner:?}"
    );
}

/// Why the server went away: the assertion or signal it reports, and the end of its log.
fn log_tail(s: &Server) -> String {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    let why: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l.contains("ASSERTION") || l.contains("crashed by signal") || l.contains("==> ")
        })
        .copied()
        .collect();
    format!(
        "{}\n...\n{}",
        why.join("\n"),
        lines[lines.len().saturating_sub(5)..].join("\n")
    )
}

const UNBLOCKED_ERROR: &str = "UNBLOCKED client unblocked via CLIENT UNBLOCK";

// ---- each way a wait can end ----

#[test]
fn a_grant_by_release_is_one_ok() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (mut w, _) = waiter(&s, "a", "w", 0);
    assert_eq!(c.release("a", "holder"), 1);
    w.answered_once(&R::ok(), "grant");
    assert_eq!(c.owner("a").as_deref(), Some("w"));
}

#[test]
fn a_block_timeout_is_one_nil() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (mut w, _) = waiter(&s, "a", "w", 100);
    w.answered_once(&R::nil(), "BLOCK 100 ran out");
    s.wait_blocked(0);
    assert_eq!(c.release("a", "holder"), 1);
    assert_eq!(c.owner("a"), None, "the timed-out waiter left the queue");
}

/// `CLIENT UNBLOCK id`, `... TIMEOUT` and `... ERROR`: 1, one reply (nil, nil, the error), and
/// the waiter has left the queue: a later release does not hand it the lock.
#[test]
fn client_unblock_in_each_form_is_one_reply_and_leaves_the_queue() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let forms: &[(&[&str], R)] = &[
        (&[], R::nil()),
        (&["TIMEOUT"], R::nil()),
        (&["ERROR"], R::Error(UNBLOCKED_ERROR.into())),
    ];
    for (form, want) in forms {
        let what = format!("CLIENT UNBLOCK id {}", form.join(" "));
        c.acquire("a", "holder");
        let (mut w, id) = waiter(&s, "a", "w", 0);
        let id = id.to_string();
        let mut cmd = vec!["CLIENT", "UNBLOCK", &id];
        cmd.extend_from_slice(form);
        assert_eq!(c.call(&cmd), R::Int(1), "{what}");
        w.answered_once(want, &what);
        s.wait_blocked(0);
        assert_eq!(c.release("a", "holder"), 1);
        assert_eq!(c.owner("a"), None, "{what}: the waiter left the queue");
    }
}

/// A waiter that is CLIENT KILLed or hangs up is never handed the lock: the next one gets it.
#[test]
fn killed_or_hung_up_waiters_are_never_handed_the_lock() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    for how in ["CLIENT KILL", "hang-up"] {
        c.acquire("a", "holder");
        let (mut gone, gone_id) = waiter(&s, "a", "gone", 0);
        let (mut next, _) = waiter(&s, "a", "next", 0);
        if how == "CLIENT KILL" {
            let id = gone_id.to_string();
            assert_eq!(c.call(&["CLIENT", "KILL", "ID", &id]), R::Int(1));
            assert_eq!(
                gone.read_to_close(how),
                vec![],
                "{how}: no reply to the dead"
            );
        } else {
            drop(gone);
        }
        s.wait_blocked(1);
        assert_eq!(c.release("a", "holder"), 1);
        next.answered_once(&R::ok(), how);
        assert_eq!(c.owner("a").as_deref(), Some("next"), "{how}");
        assert_eq!(c.release("a", "next"), 1);
    }
}

/// `REPLICAOF` demotes the primary: every blocked client gets one `-UNBLOCKED ...` error and
/// its connection is closed.
#[test]
fn demotion_by_replicaof_is_one_error_then_the_connection_closes() {
    let primary = tcp_server();
    let other = tcp_server();
    let mut c = Raw::connect(&primary);
    c.acquire("a", "holder");
    let (mut w, _) = waiter(&primary, "a", "w", 0);
    let port = other.port.unwrap().to_string();
    assert_eq!(c.call(&["REPLICAOF", "127.0.0.1", &port]), R::ok());
    let replies = w.read_to_close("demoted");
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert!(
        matches!(&replies[0], R::Error(e) if e.starts_with("UNBLOCKED")),
        "{replies:?}"
    );
    assert_eq!(c.call(&["PING"]), R::Status("PONG".into()));
}

/// FLUSHALL, FLUSHDB, LOCK.RESETALL and a DEBUG RELOAD from an RDB without the lock all free
/// the lock: the waiter gets one OK and owns it.
#[test]
fn flushes_resets_and_reloads_that_free_the_lock_are_one_ok() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    // An RDB in which lock a is free, for DEBUG RELOAD NOSAVE to load.
    assert_eq!(c.call(&["SAVE"]), R::ok());
    let cases: &[&[&str]] = &[
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["LOCK.RESETALL"],
        &["DEBUG", "RELOAD", "NOSAVE"],
    ];
    for cmd in cases {
        let what = cmd.join(" ");
        c.acquire("a", "holder");
        let (mut w, _) = waiter(&s, "a", "w", 0);
        let r = c.call(cmd);
        assert!(!matches!(r, R::Error(_)), "{what}: {r:?}");
        w.answered_once(&R::ok(), &what);
        assert_eq!(c.owner("a").as_deref(), Some("w"), "{what}");
        assert_eq!(c.release("a", "w"), 1);
        s.wait_blocked(0);
    }
}

/// A DEBUG RELOAD that restores the lock as it was does not end the wait; the later release
/// gives the one reply.
#[test]
fn a_reload_that_keeps_the_lock_does_not_answer_the_waiter() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (mut w, _) = waiter(&s, "a", "w", 0);
    assert_eq!(c.call(&["DEBUG", "RELOAD"]), R::ok());
    assert_eq!(w.next(Duration::from_millis(200)), Err(End::Quiet));
    assert_eq!(c.owner("a").as_deref(), Some("holder"));
    assert_eq!(c.release("a", "holder"), 1);
    w.answered_once(&R::ok(), "release after DEBUG RELOAD");
    assert_eq!(c.owner("a").as_deref(), Some("w"));
}

/// SWAPDB 0 1 brings an empty database 0: lock a is free there and the waiter (which waits in
/// database 0) gets one OK and owns it in database 0; the old holder's lock moved to 1.
#[test]
fn swapdb_is_one_reply_consistent_with_the_owner_in_the_waiters_db() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (mut w, _) = waiter(&s, "a", "w", 0);
    assert_eq!(c.call(&["SWAPDB", "0", "1"]), R::ok());
    let got = w.read("SWAPDB");
    w.send(&[&["PING"]]);
    assert_eq!(w.read("PING"), R::Status("PONG".into()), "one reply");
    let owner0 = w.owner("a");
    assert_eq!(got, R::ok(), "owner in db 0: {owner0:?}");
    assert_eq!(owner0.as_deref(), Some("w"));
    assert_eq!(c.call(&["SELECT", "1"]), R::ok());
    assert_eq!(c.owner("a").as_deref(), Some("holder"));
}

// ---- races with a grant in one event-loop pass ----

/// Holder `holder` holds `a`; `w` and then `w2` wait. One write from another connection
/// releases `a` (granting it to `w`) and then runs `then`: everything in one pass.
struct Race {
    s: Server,
    c: Raw,
    w: Raw,
    w_id: String,
    w2: Raw,
}

fn race(s: Server) -> Race {
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (w, id) = waiter(&s, "a", "w", 0);
    let (w2, _) = waiter(&s, "a", "w2", 0);
    Race {
        s,
        c,
        w,
        w_id: id.to_string(),
        w2,
    }
}

/// CLIENT UNBLOCK landing after the grant in the same pass finds no waiter any more: it
/// replies 0, and the waiter gets exactly one reply, OK, and owns the lock.
fn unblock_race(form: &[&str]) {
    let Race {
        s,
        mut c,
        mut w,
        w_id,
        mut w2,
    } = race(Server::start());
    let what = format!(
        "CLIENT UNBLOCK {} after the grant",
        [&["id"], form].concat().join(" ")
    );
    let mut unblock = vec!["CLIENT", "UNBLOCK", &w_id];
    unblock.extend_from_slice(form);
    c.send(&[&["LOCK.RELEASE", "a", "holder"], &unblock]);
    let released = c.next(DEADLINE);
    let unblocked = c.next(DEADLINE);
    if unblocked == Err(End::Closed) {
        panic!("{what}: the server went away:\n{}", log_tail(&s));
    }
    let (got, next) = w.reply_then_ping(&what);
    let owner = c.owner("a");
    // The invariant first, then the outcome intended when CLIENT UNBLOCK comes too late.
    one_reply_agreeing_with_the_owner(&what, &got, &next, owner.as_deref(), "w");
    assert_eq!(
        (released, unblocked, got, next, owner.as_deref()),
        (
            Ok(R::Int(1)),
            Ok(R::Int(0)),
            R::ok(),
            R::Status("PONG".into()),
            Some("w")
        ),
        "{what}: (LOCK.RELEASE, CLIENT UNBLOCK, the waiter's reply, the reply to its PING, LOCK.OWNER)"
    );
    // The queue is intact: w2 still waits, and gets the lock from w.
    assert_eq!(w2.next(Duration::from_millis(100)), Err(End::Quiet));
    assert_eq!(blocked(&s), 1);
    assert_eq!(c.release("a", "w"), 1);
    w2.answered_once(&R::ok(), "the next waiter");
    assert_eq!(c.owner("a").as_deref(), Some("w2"));
}

#[test]
fn client_unblock_racing_a_grant() {
    unblock_race(&[]);
}

#[test]
fn client_unblock_timeout_racing_a_grant() {
    unblock_race(&["TIMEOUT"]);
}

#[test]
fn client_unblock_error_racing_a_grant() {
    unblock_race(&["ERROR"]);
}

/// The same race inside a transaction: EXEC runs both in one go.
#[test]
fn client_unblock_error_racing_a_grant_in_multi() {
    let Race {
        s,
        mut c,
        mut w,
        w_id,
        w2: _w2,
    } = race(Server::start());
    c.send(&[
        &["MULTI"],
        &["LOCK.RELEASE", "a", "holder"],
        &["CLIENT", "UNBLOCK", &w_id, "ERROR"],
        &["EXEC"],
    ]);
    assert_eq!(c.read("MULTI"), R::ok());
    assert_eq!(c.read("queued"), R::Status("QUEUED".into()));
    assert_eq!(c.read("queued"), R::Status("QUEUED".into()));
    let exec = c.next(DEADLINE);
    if exec == Err(End::Closed) {
        panic!("the server went away:\n{}", log_tail(&s));
    }
    let what = "MULTI release + CLIENT UNBLOCK ERROR";
    let (got, next) = w.reply_then_ping(what);
    let owner = c.owner("a");
    one_reply_agreeing_with_the_owner(what, &got, &next, owner.as_deref(), "w");
    assert_eq!(
        (exec, got, next, owner.as_deref()),
        (
            Ok(R::Array(Some(vec![R::Int(1), R::Int(0)]))),
            R::ok(),
            R::Status("PONG".into()),
            Some("w")
        ),
        "(EXEC, the waiter's reply, the reply to its PING, LOCK.OWNER)"
    );
}

/// CLIENT KILL after the grant in the same pass: the dead client's grant is taken back and
/// the lock goes to the next waiter (or is free); it is never left with the dead client.
#[test]
fn client_kill_racing_a_grant_hands_the_lock_on() {
    let Race {
        mut c,
        mut w,
        w_id,
        mut w2,
        s: _s,
    } = race(Server::start());
    c.send(&[
        &["LOCK.RELEASE", "a", "holder"],
        &["CLIENT", "KILL", "ID", &w_id],
    ]);
    assert_eq!(c.read("LOCK.RELEASE"), R::Int(1));
    assert_eq!(c.read("CLIENT KILL"), R::Int(1));
    assert_ne!(
        c.owner("a").as_deref(),
        Some("w"),
        "left with a dead client"
    );
    assert_eq!(w.read_to_close("killed"), vec![], "no reply to the dead");
    w2.answered_once(&R::ok(), "the next waiter");
    assert_eq!(c.owner("a").as_deref(), Some("w2"));
}

#[test]
fn client_kill_racing_a_grant_with_nobody_next_frees_the_lock() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("a", "holder");
    let (mut w, id) = waiter(&s, "a", "w", 0);
    let id = id.to_string();
    c.send(&[
        &["LOCK.RELEASE", "a", "holder"],
        &["CLIENT", "KILL", "ID", &id],
    ]);
    assert_eq!(c.read("LOCK.RELEASE"), R::Int(1));
    assert_eq!(c.read("CLIENT KILL"), R::Int(1));
    assert_eq!(c.owner("a"), None, "left with a dead client");
    assert_eq!(w.read_to_close("killed"), vec![], "no reply to the dead");
    s.wait_blocked(0);
}

/// REPLICAOF after the grant in the same pass: the waiter gets exactly one reply (OK or the
/// UNBLOCKED error) before its connection closes.
#[test]
fn replicaof_racing_a_grant_is_one_reply() {
    let other = tcp_server();
    let Race {
        mut c,
        mut w,
        s,
        w_id: _,
        w2: _w2,
    } = race(tcp_server());
    let port = other.port.unwrap().to_string();
    c.send(&[
        &["LOCK.RELEASE", "a", "holder"],
        &["REPLICAOF", "127.0.0.1", &port],
    ]);
    assert_eq!(c.read("LOCK.RELEASE"), R::Int(1));
    assert_eq!(c.read("REPLICAOF"), R::ok());
    let replies = w.read_to_close("demoted after the grant");
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert!(
        matches!(&replies[0], R::Error(e) if e.starts_with("UNBLOCKED")) || replies[0] == R::ok(),
        "{replies:?}"
    );
    assert_eq!(c.call(&["PING"]), R::Status("PONG".into()), "{}", s.log());
}

/// A BLOCK deadline and a release at about the same moment (best effort: the release is sent
/// at several offsets around the deadline). Either way one reply, agreeing with the owner.
#[test]
fn a_block_timeout_racing_a_grant_is_one_reply_agreeing_with_the_owner() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let (mut granted, mut timed_out) = (0, 0);
    for offset_ms in (40..=62).step_by(2) {
        c.acquire("a", "holder");
        let mut w = Raw::connect(&s);
        assert_eq!(w.call(&["PING"]), R::Status("PONG".into()));
        w.send(&[&["LOCK.ACQUIRE", "a", "w", "60", "BLOCK", "50"]]);
        let sent = Instant::now();
        thread::sleep(Duration::from_millis(offset_ms).saturating_sub(sent.elapsed()));
        c.send(&[&["LOCK.RELEASE", "a", "holder"]]);
        assert_eq!(c.read("LOCK.RELEASE"), R::Int(1));
        let got = w.read("racing waiter");
        w.send(&[&["PING"]]);
        assert_eq!(
            w.read("PING"),
            R::Status("PONG".into()),
            "offset {offset_ms}: a second reply after {got:?}"
        );
        let owner = c.owner("a");
        match got {
            R::Status(ref s) if s == "OK" => {
                granted += 1;
                assert_eq!(owner.as_deref(), Some("w"), "offset {offset_ms}: OK");
                assert_eq!(c.release("a", "w"), 1);
            }
            R::Bulk(None) => {
                timed_out += 1;
                assert_eq!(owner, None, "offset {offset_ms}: nil but the lock is w's");
            }
            other => panic!("offset {offset_ms}: {other:?}"),
        }
        s.wait_blocked(0);
    }
    eprintln!("BLOCK 50 vs release: {granted} granted, {timed_out} timed out");
}
