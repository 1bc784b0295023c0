//! `LOCK.ACQUIRE ... BIND`: the lock is held for its TTL and only while the acquiring
//! connection lives. A holder that disconnects, is killed (`CLIENT KILL`) or whose process dies
//! gives the lock up at once, and its next waiter is served.

mod common;
use common::raw::*;
use common::*;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How soon a waiter must be served once the bound holder is gone (the lease is an hour).
const SOON: Duration = Duration::from_secs(2);

fn served_soon(w: &mut Raw, what: &str) {
    let start = Instant::now();
    let got = w
        .next(SOON)
        .unwrap_or_else(|e| panic!("{what}: the waiter was not served ({e:?})"));
    assert_eq!(got, R::ok(), "{what}");
    assert!(start.elapsed() < SOON, "{what}: {:?}", start.elapsed());
}

fn info_field(c: &mut Raw, name: &str, field: &str) -> R {
    let R::Array(Some(items)) = c.call(&["LOCK.INFO", name]) else {
        panic!("LOCK.INFO")
    };
    let i = items
        .iter()
        .position(|r| *r == R::Bulk(Some(field.as_bytes().to_vec())))
        .unwrap();
    items[i + 1].clone()
}

#[test]
fn a_bound_lock_is_let_go_when_its_connection_closes_or_is_killed() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    for how in ["close", "CLIENT KILL"] {
        let mut holder = Raw::connect(&s);
        let id = holder.call(&["CLIENT", "ID"]).int();
        assert_eq!(
            holder.call(&["LOCK.ACQUIRE", "b", "h", "3600", "BIND"]),
            R::ok()
        );
        assert_eq!(info_field(&mut admin, "b", "bound_to"), R::Int(id));
        let mut w = Raw::connect(&s);
        w.send(&[&["LOCK.ACQUIRE", "b", "w", "60", "BLOCK", "0"]]);
        s.wait_blocked(1);
        if how == "close" {
            drop(holder);
        } else {
            let r = admin.call(&["CLIENT", "KILL", "ID", &id.to_string()]);
            assert_eq!(r, R::Int(1));
        }
        served_soon(&mut w, how);
        assert_eq!(admin.owner("b").as_deref(), Some("w"), "{how}");
        assert_eq!(admin.release("b", "w"), 1);
    }
}

#[test]
fn a_bound_holder_process_killed_gives_the_lock_up_at_once() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    // The holder is a separate process: redis-cli sending the acquire, then repeating it in an
    // hour (`-r -1 -i 3600`), so it keeps its connection open until it is SIGKILLed.
    let sock = s.unix_socket().expect("unix socket");
    let mut child = Command::new("redis-cli")
        .arg("-s")
        .arg(&sock)
        .args(["-r", "-1", "-i", "3600"])
        .args(["LOCK.ACQUIRE", "p", "holder", "3600", "BIND"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli (redis-tools) on PATH");
    let start = Instant::now();
    while admin.owner("p").as_deref() != Some("holder") {
        assert!(start.elapsed() < DEADLINE, "the holder never took the lock");
        thread::sleep(Duration::from_millis(5));
    }
    let mut w = Raw::connect(&s);
    w.send(&[&["LOCK.ACQUIRE", "p", "w", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    child.kill().expect("SIGKILL the holder");
    let _ = child.wait();
    served_soon(&mut w, "after SIGKILL of the holder");
    assert_eq!(admin.owner("p").as_deref(), Some("w"));
}

/// Wait until the server no longer lists client `id`, then watch `name`'s owner stay `owner`
/// for a while (a take-back would come within a timer pass of the disconnection).
fn gone_and_still_owned(admin: &mut Raw, id: i64, name: &str, owner: &str) {
    let start = Instant::now();
    while admin.call(&["CLIENT", "LIST", "ID", &id.to_string()]) != R::Bulk(Some(Vec::new())) {
        assert!(start.elapsed() < DEADLINE, "client {id} never went away");
        thread::sleep(Duration::from_millis(1));
    }
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(100) {
        assert_eq!(admin.owner(name).as_deref(), Some(owner), "{name}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn binding_follows_the_last_acquire_and_ends_with_release() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let mut a = Raw::connect(&s);
    let a_id = a.call(&["CLIENT", "ID"]).int();
    let mut b = Raw::connect(&s);
    let b_id = b.call(&["CLIENT", "ID"]).int();
    assert_eq!(a.call(&["LOCK.ACQUIRE", "f", "t", "3600", "BIND"]), R::ok());
    // The same token re-acquires from connection b with BIND: now bound to b.
    assert_eq!(b.call(&["LOCK.ACQUIRE", "f", "t", "3600", "BIND"]), R::ok());
    assert_eq!(info_field(&mut admin, "f", "bound_to"), R::Int(b_id));
    drop(a);
    // a's going changes nothing.
    gone_and_still_owned(&mut admin, a_id, "f", "t");
    // Without BIND the same token unbinds it: b's going changes nothing either.
    assert_eq!(admin.call(&["LOCK.ACQUIRE", "f", "t", "3600"]), R::ok());
    assert_eq!(info_field(&mut admin, "f", "bound_to"), R::nil());
    drop(b);
    gone_and_still_owned(&mut admin, b_id, "f", "t");
    // RESET keeps the connection: a bound lock survives it.
    let mut r = Raw::connect(&s);
    let r_id = r.call(&["CLIENT", "ID"]).int();
    assert_eq!(r.call(&["LOCK.ACQUIRE", "g", "t", "3600", "BIND"]), R::ok());
    assert_eq!(r.call(&["RESET"]), R::Status("RESET".into()));
    assert_eq!(admin.owner("g").as_deref(), Some("t"));
    // Released from any connection: no longer bound, and the old holder's going is nothing.
    assert_eq!(admin.release("g", "t"), 1);
    assert_eq!(admin.call(&["LOCK.ACQUIRE", "g", "other", "3600"]), R::ok());
    drop(r);
    gone_and_still_owned(&mut admin, r_id, "g", "other");
}

#[test]
fn a_waiter_that_asked_bind_is_bound_when_granted() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    admin.acquire("q", "h");
    let mut w = Raw::connect(&s);
    let w_id = w.call(&["CLIENT", "ID"]).int();
    w.send(&[&["LOCK.ACQUIRE", "q", "w", "3600", "BLOCK", "0", "BIND"]]);
    s.wait_blocked(1);
    let mut next = Raw::connect(&s);
    next.send(&[&["LOCK.ACQUIRE", "q", "n", "60", "BLOCK", "0"]]);
    s.wait_blocked(2);
    assert_eq!(admin.release("q", "h"), 1);
    assert_eq!(w.read("the bound waiter"), R::ok());
    assert_eq!(info_field(&mut admin, "q", "bound_to"), R::Int(w_id));
    drop(w);
    served_soon(&mut next, "after the bound waiter left");
}

#[test]
fn ten_thousand_bound_acquisitions_by_short_lived_connections_leave_nothing() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    for i in 0..10_000 {
        let mut c = Raw::connect(&s);
        let name = format!("leak{}", i % 100);
        let r = c.call(&["LOCK.ACQUIRE", &name, "t", "3600", "BIND"]);
        assert_eq!(r, R::ok(), "{i}");
        if i % 2 == 0 {
            assert_eq!(c.release(&name, "t"), 1);
        }
        drop(c);
        if i % 2 == 1 {
            // Let go with the connection: wait for it, so the next round finds it free.
            let start = Instant::now();
            while admin.owner(&name).is_some() {
                assert!(start.elapsed() < DEADLINE, "{name} never let go");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let info = admin.call(&["INFO", "rlock"]).text().unwrap_or_default();
    assert!(info.contains("rlock_bound_locks:0\r\n"), "{info}");
    assert!(info.contains("rlock_bound_released:5000\r\n"), "{info}");
}

/// `INFO rlock`'s `field` (without the `rlock_` prefix).
fn gauge(c: &mut Raw, field: &str) -> i64 {
    let info = c.call(&["INFO", "rlock"]).text().unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("rlock_{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rlock_{field} in {info}"))
}

/// Wait until `bound_locks` and `bound_clients` are both 0.
fn bindings_gone(c: &mut Raw, what: &str) {
    let start = Instant::now();
    loop {
        let (locks, clients) = (gauge(c, "bound_locks"), gauge(c, "bound_clients"));
        if locks == 0 && clients == 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: bound_locks {locks}, bound_clients {clients}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A binding ends with its lock, however the lock ends, while the bound connection stays open:
/// nothing is kept for it, and the connection's later going takes nothing back.
#[test]
fn a_binding_ends_when_its_lock_ends_by_any_path() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let mut holder = Raw::connect(&s);
    let bind = |h: &mut Raw, name: &str, ttl: &str| {
        assert_eq!(
            h.call(&["LOCK.ACQUIRE", name, "t", ttl, "BIND"]),
            R::ok(),
            "{name}"
        );
    };
    let cases: &[(&str, &[&str])] = &[
        ("DEL", &["DEL", "lock:e"]),
        ("UNLINK", &["UNLINK", "lock:e"]),
        ("PEXPIRE in the past", &["PEXPIRE", "lock:e", "0"]),
        ("RENAME", &["RENAME", "lock:e", "elsewhere"]),
        ("MOVE", &["MOVE", "lock:e", "5"]),
        ("FLUSHDB", &["FLUSHDB"]),
        ("FLUSHALL", &["FLUSHALL"]),
        ("SWAPDB", &["SWAPDB", "0", "7"]),
        ("LOCK.RESETALL", &["LOCK.RESETALL"]),
    ];
    for (what, end) in cases {
        bind(&mut holder, "e", "3600");
        assert_eq!(gauge(&mut admin, "bound_locks"), 1, "{what}");
        assert!(!matches!(admin.call(end), R::Error(_)), "{what}");
        bindings_gone(&mut admin, what);
        admin.call(&["FLUSHALL"]);
    }
    // Expiry, and a python-redis-lock holder taking the freed lock.
    bind(&mut holder, "x", "1");
    bindings_gone(&mut admin, "expiry");
    bind(&mut holder, "p", "3600");
    assert_eq!(admin.call(&["DEL", "lock:p"]), R::Int(1));
    let set = admin.call(&["SET", "lock:p", "py-id", "NX", "EX", "60"]);
    assert_eq!(set, R::ok());
    bindings_gone(&mut admin, "python holder");
    // The holder's going takes nothing back: the python holder keeps its lock.
    let id = holder.call(&["CLIENT", "ID"]).int();
    drop(holder);
    gone_and_still_owned(&mut admin, id, "p", "py-id");
    assert_eq!(gauge(&mut admin, "bound_released"), 0);
}

/// 40,000 BIND acquisitions on one connection, each lock ending by expiry: the connection's
/// bookkeeping goes back to nothing (not one entry per lock it ever held), while it stays open.
#[test]
fn forty_thousand_bound_locks_that_expire_leave_nothing_behind() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let mut holder = Raw::connect(&s);
    const N: usize = 40_000;
    let names: Vec<String> = (0..N).map(|i| format!("many{i}")).collect();
    for chunk in names.chunks(1000) {
        let cmds: Vec<[&str; 5]> = chunk
            .iter()
            .map(|n| ["LOCK.ACQUIRE", n.as_str(), "t", "1", "BIND"])
            .collect();
        let refs: Vec<&[&str]> = cmds.iter().map(|c| &c[..]).collect();
        holder.send(&refs);
        for n in chunk {
            assert_eq!(holder.read(n), R::ok(), "{n}");
        }
    }
    assert_eq!(gauge(&mut admin, "bound_locks"), N as i64);
    assert_eq!(gauge(&mut admin, "bound_clients"), 1);
    // All of them expire within about a second (the server's active expiry finds them).
    bindings_gone(&mut admin, "after expiry");
    assert_eq!(holder.call(&["PING"]), R::Status("PONG".into()));
    assert_eq!(gauge(&mut admin, "bound_released"), 0);
}

/// BIND from a script or function would bind the lock to the script engine's connection,
/// which never goes away: it is refused, and changes nothing.
#[test]
fn bind_inside_a_script_or_function_is_refused() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let script = "return redis.call('LOCK.ACQUIRE', 's', 't', '60', 'BIND')";
    let lib = "#!lua name=binding\nredis.register_function('bind_it', function(keys, args) \
               return redis.call('LOCK.ACQUIRE', 's', 't', '60', 'BIND') end)";
    assert!(matches!(c.call(&["FUNCTION", "LOAD", lib]), R::Bulk(_)));
    for call in [&["EVAL", script, "0"][..], &["FCALL", "bind_it", "0"][..]] {
        match c.call(call) {
            R::Error(e) => assert!(e.contains("BIND is not allowed in scripts"), "{e}"),
            other => panic!("{call:?}: {other:?}"),
        }
        assert_eq!(c.owner("s"), None, "{call:?}");
    }
    assert_eq!(gauge(&mut c, "bound_locks"), 0);
    // Without BIND a script may take the lock; in MULTI, BIND binds the caller.
    let plain = "return redis.call('LOCK.ACQUIRE', 's', 't', '60')";
    assert_eq!(c.call(&["EVAL", plain, "0"]), R::ok());
    assert_eq!(c.release("s", "t"), 1);
    let mut m = Raw::connect(&s);
    let id = m.call(&["CLIENT", "ID"]).int();
    m.call(&["MULTI"]);
    m.call(&["LOCK.ACQUIRE", "s", "t", "60", "BIND"]);
    assert_eq!(m.call(&["EXEC"]), R::Array(Some(vec![R::ok()])));
    assert_eq!(info_field(&mut c, "s", "bound_to"), R::Int(id));
}
