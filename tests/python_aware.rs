//! A lock the module frees is signalled for python-redis-lock (`lock-signal:<name>`) when, and
//! only when, a python-redis-lock client may be waiting for it (`rlock.python-signal auto`), or
//! always, or never, as configured. A python waiter here is what python-redis-lock does on the
//! wire: `SET lock:<n> <id> NX EX <expire>`, and while that fails, `BLPOP lock-signal:<n>
//! <timeout>`; tests/python runs the real library. Every wait has a deadline.

mod common;
use common::raw::*;
use common::*;
use std::time::Duration;

/// How long a woken BLPOP may take to answer, and how long a waiter that must NOT be woken is
/// watched (a positive wait: the test then checks the waiter is still blocked).
const WAKE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn signalled(c: &mut Raw, name: &str) -> bool {
    c.call(&["EXISTS", &format!("lock-signal:{name}")]) == R::Int(1)
}

fn config(c: &mut Raw, value: &str) {
    assert_eq!(
        c.call(&["CONFIG", "SET", "rlock.python-signal", value]),
        R::ok()
    );
}

/// A python-redis-lock waiter on `name`: the failed `SET NX`, then `BLPOP` (timeout in s).
fn python_waiter(s: &Server, name: &str, timeout: &str) -> Raw {
    let mut py = Raw::connect(s);
    let set = py.call(&["SET", &format!("lock:{name}"), "py-id", "NX", "EX", "60"]);
    assert_eq!(
        set,
        R::nil(),
        "the lock should be held while the waiter tries"
    );
    py.send(&[&["BLPOP", &format!("lock-signal:{name}"), timeout]]);
    py
}

fn woken(py: &mut Raw, name: &str) {
    let got = py
        .next(WAKE)
        .unwrap_or_else(|e| panic!("the python waiter on {name} was not woken ({e:?})"));
    assert_eq!(
        got,
        R::Array(Some(vec![
            R::Bulk(Some(format!("lock-signal:{name}").into_bytes())),
            R::Bulk(Some(b"1".to_vec())),
        ])),
        "BLPOP's reply"
    );
}

fn still_blocked(py: &mut Raw) {
    assert_eq!(
        py.next(QUIET),
        Err(End::Quiet),
        "the python waiter was answered"
    );
}

/// Every keyspace event on `lock-signal:*` keys from now on, on a subscribed connection.
fn watch_signals(s: &Server) -> Raw {
    let mut c = Raw::connect(s);
    assert_eq!(
        c.call(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
        R::ok()
    );
    let mut sub = Raw::connect(s);
    sub.call(&["PSUBSCRIBE", "__keyspace@*__:lock-signal:*"]);
    sub
}

/// The `lock-signal:*` events received (`<key> <event>`) until one on `last`'s signal.
fn signal_events_until(sub: &mut Raw, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let m = sub
            .next(WAKE)
            .unwrap_or_else(|e| panic!("no event for {last} ({e:?}); saw {seen:?}"));
        let R::Array(Some(parts)) = m else {
            panic!("{m:?}")
        };
        let channel = parts[2].text().unwrap_or_default();
        let key = channel
            .split_once(':')
            .map(|(_, k)| k.to_string())
            .unwrap_or_default();
        if key == format!("lock-signal:{last}") {
            return seen;
        }
        seen.push(format!("{key} {}", parts[3].text().unwrap_or_default()));
    }
}

#[test]
fn no_signal_where_no_python_client_can_wait() {
    let s = Server::start();
    let mut sub = watch_signals(&s);
    let mut c = Raw::connect(&s);
    // A release, a foreign DEL, a hand-over, RESETALL, a lease that ends with and without a
    // module waiter: none writes a lock-signal key.
    c.acquire("a", "t");
    assert_eq!(c.release("a", "t"), 1);
    c.acquire("c", "t");
    assert_eq!(c.call(&["DEL", "lock:c"]), R::Int(1));
    c.acquire("d", "t");
    let mut waiter = Raw::connect(&s);
    waiter.send(&[&["LOCK.ACQUIRE", "d", "w", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    assert_eq!(c.release("d", "t"), 1);
    assert_eq!(waiter.read("the module waiter"), R::ok());
    c.acquire("e", "t");
    assert_eq!(c.call(&["LOCK.RESETALL"]), R::Int(2));
    assert_eq!(c.call(&["LOCK.ACQUIRE", "b", "t", "1"]), R::ok());
    assert_eq!(c.call(&["LOCK.ACQUIRE", "f", "t", "1"]), R::ok());
    waiter.send(&[&["LOCK.ACQUIRE", "b", "next", "60", "BLOCK", "5000"]]);
    assert_eq!(waiter.read("b after its lease ended"), R::ok());
    // f has expired by now too (same lease); the end marker: a python waiter on "probe",
    // signalled after every look above was made.
    c.acquire("probe", "t");
    let mut py = python_waiter(&s, "probe", "0");
    s.wait_blocked(1);
    assert_eq!(c.call(&["EXISTS", "lock:f"]), R::Int(0));
    // Freed by a foreign DEL, so that its look comes after every look above.
    assert_eq!(c.call(&["DEL", "lock:probe"]), R::Int(1));
    woken(&mut py, "probe");
    assert_eq!(signal_events_until(&mut sub, "probe"), Vec::<String>::new());
}

#[test]
fn a_blpop_without_limit_is_woken_by_a_module_release() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("n", "t");
    let mut py = python_waiter(&s, "n", "0");
    s.wait_blocked(1);
    assert_eq!(c.release("n", "t"), 1);
    woken(&mut py, "n");
    // Its own SET NX now succeeds, as python-redis-lock's loop does next.
    assert_eq!(
        py.call(&["SET", "lock:n", "py-id", "NX", "EX", "60"]),
        R::ok()
    );
}

#[test]
fn a_python_waiter_is_woken_by_expiry_and_by_a_foreign_del() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "x", "t", "1"]), R::ok());
    let mut py = python_waiter(&s, "x", "0");
    s.wait_blocked(1);
    woken(&mut py, "x"); // the lease ended
    c.acquire("y", "t");
    let mut py = python_waiter(&s, "y", "10");
    s.wait_blocked(1);
    assert_eq!(c.call(&["DEL", "lock:y"]), R::Int(1));
    woken(&mut py, "y");
}

#[test]
fn a_release_between_the_failed_set_and_the_blpop_leaves_a_signal_to_find() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("gap", "t");
    let mut py = Raw::connect(&s);
    assert_eq!(
        py.call(&["SET", "lock:gap", "py-id", "NX", "EX", "60"]),
        R::nil()
    );
    // The holder releases before the python client reaches its BLPOP.
    assert_eq!(c.release("gap", "t"), 1);
    assert!(signalled(&mut c, "gap"));
    assert_eq!(
        py.call(&["BLPOP", "lock-signal:gap", "0"]),
        R::Array(Some(vec![
            R::Bulk(Some(b"lock-signal:gap".to_vec())),
            R::Bulk(Some(b"1".to_vec()))
        ]))
    );
}

#[test]
fn waiters_that_gave_up_are_not_signalled() {
    let s = Server::start();
    let mut sub = watch_signals(&s);
    let mut c = Raw::connect(&s);
    let mut admin = Raw::connect(&s);
    c.acquire("g", "t");
    // One BLPOP times out, one is unblocked, one hangs up.
    let mut timed = Raw::connect(&s);
    timed.send(&[&["BLPOP", "lock-signal:g", "0.05"]]);
    assert_eq!(timed.read("BLPOP 0.05"), R::Array(None));
    let mut unblocked = Raw::connect(&s);
    let id = unblocked.call(&["CLIENT", "ID"]).int().to_string();
    unblocked.send(&[&["BLPOP", "lock-signal:g", "0"]]);
    s.wait_blocked(1);
    assert_eq!(admin.call(&["CLIENT", "UNBLOCK", &id]), R::Int(1));
    assert_eq!(unblocked.read("unblocked BLPOP"), R::Array(None));
    let mut gone = Raw::connect(&s);
    gone.send(&[&["BLPOP", "lock-signal:g", "0"]]);
    s.wait_blocked(1);
    drop(gone);
    s.wait_blocked(0);
    // Three releases of g.
    assert_eq!(c.release("g", "t"), 1);
    c.acquire("g", "t");
    assert_eq!(c.release("g", "t"), 1);
    c.acquire("g", "t");
    assert_eq!(c.release("g", "t"), 1);
    // A BLPOP inside MULTI never blocks: it does not count either.
    let mut tx = Raw::connect(&s);
    assert_eq!(tx.call(&["MULTI"]), R::ok());
    tx.call(&["BLPOP", "lock-signal:h", "0"]);
    assert_eq!(tx.call(&["EXEC"]), R::Array(Some(vec![R::Array(None)])));
    c.acquire("h", "t");
    assert_eq!(c.release("h", "t"), 1);
    // End marker: a real waiter, woken.
    c.acquire("probe", "t");
    let mut py = python_waiter(&s, "probe", "0");
    s.wait_blocked(1);
    // Freed by a foreign DEL, so that its look comes after every look above.
    assert_eq!(c.call(&["DEL", "lock:probe"]), R::Int(1));
    woken(&mut py, "probe");
    let events = signal_events_until(&mut sub, "probe");
    if clients_known(&s) {
        assert_eq!(events, Vec::<String>::new());
    } else {
        // The server cannot say which client sent a BLPOP (Redis 7.0): each that never
        // timed out counts until one signal has been left for it. (Every signal sets the
        // list's expiry once; a signal nobody took is only renewed.)
        let signals = |key: &str| {
            let event = format!("{key} expire");
            events.iter().filter(|e| **e == event).count()
        };
        assert_eq!(signals("lock-signal:g"), 2, "{events:?}");
        assert!(signals("lock-signal:h") <= 1, "{events:?}");
    }
}

/// Whether the server tells the module which client sent a command (the load log says).
fn clients_known(s: &Server) -> bool {
    s.log()
        .contains("python waiters known by client (CommandFilterGetClientId): yes")
}

#[test]
fn several_python_waiters_are_woken_one_release_at_a_time() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("m", "t");
    let mut first = python_waiter(&s, "m", "0");
    s.wait_blocked(1);
    let mut second = python_waiter(&s, "m", "0");
    s.wait_blocked(2);
    assert_eq!(c.release("m", "t"), 1);
    woken(&mut first, "m");
    still_blocked(&mut second);
    // The first takes the lock the python way and releases it through the module's view of
    // the key (a DEL, as python-redis-lock's script ends): the second is woken too.
    assert_eq!(
        first.call(&["SET", "lock:m", "py-id", "NX", "EX", "60"]),
        R::ok()
    );
    c.acquire("other", "t");
    assert_eq!(c.call(&["LOCK.RELEASE", "m", "py-id"]), R::Int(1));
    woken(&mut second, "m");
}

#[test]
fn a_module_loaded_while_python_waits_signals_that_waiter() {
    let s = Server::with(Options {
        module: false,
        ..Options::default()
    });
    let mut c = Raw::connect(&s);
    assert_eq!(c.call(&["SET", "lock:early", "py-holder"]), R::ok());
    let mut py = Raw::connect(&s);
    py.send(&[&["BLPOP", "lock-signal:early", "0"]]);
    s.wait_blocked(1);
    let path = module_path().display().to_string();
    assert_eq!(c.call(&["MODULE", "LOAD", &path]), R::ok());
    assert!(
        s.log().contains("already blocked in BLPOP/BRPOP"),
        "{}",
        s.log()
    );
    // The module cannot know which name it waits on: any freed lock is signalled while it waits.
    assert_eq!(c.call(&["LOCK.RELEASE", "early", "py-holder"]), R::Int(1));
    woken(&mut py, "early");
}

#[test]
fn resp3_clients_are_seen_too() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("r3", "t");
    let mut py = Raw::connect(&s);
    // HELLO 3's reply is a RESP3 map, which the raw reader does not parse: skip it by bytes.
    py.send(&[&["HELLO", "3"]]);
    py.send(&[&["BLPOP", "lock-signal:r3", "0"]]);
    s.wait_blocked(1);
    assert_eq!(c.release("r3", "t"), 1);
    // The RESP3 waiter took its element (the list is gone) and is no longer blocked.
    let start = std::time::Instant::now();
    loop {
        let info = c.call(&["INFO", "clients"]).text().unwrap_or_default();
        if c.call(&["EXISTS", "lock-signal:r3"]) == R::Int(0)
            && info.contains("blocked_clients:0\r\n")
        {
            break;
        }
        assert!(
            start.elapsed() < WAKE,
            "the RESP3 waiter was not woken: {info}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn python_signal_is_a_module_config() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    assert_eq!(
        c.call(&["CONFIG", "GET", "rlock.python-signal"]),
        R::Array(Some(vec![
            R::Bulk(Some(b"rlock.python-signal".to_vec())),
            R::Bulk(Some(b"auto".to_vec())),
        ]))
    );
    let bad = c.call(&["CONFIG", "SET", "rlock.python-signal", "sometimes"]);
    assert!(matches!(bad, R::Error(_)), "{bad:?}");
    // always: signalled with nobody waiting, as python-redis-lock itself does.
    config(&mut c, "always");
    c.acquire("k", "t");
    assert_eq!(c.release("k", "t"), 1);
    assert!(signalled(&mut c, "k"));
    // never: not even a real waiter is (it waits for its timeout).
    config(&mut c, "NEVER");
    c.acquire("v", "t");
    let mut py = python_waiter(&s, "v", "0");
    s.wait_blocked(1);
    assert_eq!(c.release("v", "t"), 1);
    still_blocked(&mut py);
    assert!(!signalled(&mut c, "v"));
    config(&mut c, "auto");
    // Set at load: --loadmodule librlock.so python-signal never
    let s2 = Server::with(Options {
        module: false,
        args: vec![
            "--loadmodule".into(),
            module_path().display().to_string(),
            "python-signal".into(),
            "never".into(),
        ],
        ..Options::default()
    });
    let mut c2 = Raw::connect(&s2);
    assert_eq!(
        c2.call(&["CONFIG", "GET", "rlock.python-signal"]),
        R::Array(Some(vec![
            R::Bulk(Some(b"rlock.python-signal".to_vec())),
            R::Bulk(Some(b"never".to_vec())),
        ]))
    );
}

/// A load option the module does not know, or a value it does not take, stops the module from
/// loading (and so the server from starting), with a log line naming it: a misspelt option
/// must not leave the default in force unnoticed.
#[test]
fn a_misspelt_load_option_refuses_to_load() {
    let load = |extra: &[&str]| {
        let mut args = vec![
            "--loadmodule".to_string(),
            module_path().display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["python-signl", "never"],
            "unknown load option 'python-signl'",
        ),
        (
            &["python-signal", "nevr"],
            "bad value 'nevr' for load option python-signal",
        ),
        (
            &["python-signal"],
            "load option 'python-signal' has no value",
        ),
        (
            &["python-signal", "never", "extra", "1"],
            "unknown load option 'extra'",
        ),
    ];
    for (extra, want) in cases {
        let log = start_fails(&load(extra));
        assert!(
            log.contains(want),
            "{extra:?}: no {want:?} in the log:\n{log}"
        );
    }
}

// ---- python-redis-lock waiters get their turn ----

#[test]
fn a_python_waiter_that_came_first_is_served_first() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("turn", "holder");
    let mut py = python_waiter(&s, "turn", "0");
    s.wait_blocked(1);
    let mut module = Raw::connect(&s);
    module.send(&[&["LOCK.ACQUIRE", "turn", "mod", "60", "BLOCK", "0"]]);
    s.wait_blocked(2);
    assert_eq!(c.release("turn", "holder"), 1);
    // The python waiter is woken, and the lock is kept free for it: its SET NX wins.
    woken(&mut py, "turn");
    assert_eq!(
        py.call(&["SET", "lock:turn", "py-id", "NX", "EX", "60"]),
        R::ok()
    );
    assert_eq!(
        module.next(QUIET),
        Err(End::Quiet),
        "the module waiter jumped the line"
    );
    // A module client arriving now waits too (non-blocking: nil).
    assert_eq!(c.call(&["LOCK.ACQUIRE", "turn", "late", "60"]), R::nil());
    // python-redis-lock's release (its script ends with DEL): the module waiter is next.
    assert_eq!(c.call(&["LOCK.RELEASE", "turn", "py-id"]), R::Int(1));
    assert_eq!(
        module.read("the module waiter after the python holder"),
        R::ok()
    );
    assert_eq!(c.owner("turn").as_deref(), Some("mod"));
}

#[test]
fn a_module_waiter_that_came_first_is_served_first() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("order", "holder");
    let mut module = Raw::connect(&s);
    module.send(&[&["LOCK.ACQUIRE", "order", "mod", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    let mut py = python_waiter(&s, "order", "0");
    s.wait_blocked(2);
    assert_eq!(c.release("order", "holder"), 1);
    assert_eq!(module.read("the first waiter"), R::ok());
    still_blocked(&mut py);
    // Then the python waiter's turn: the module holder releases, python is woken.
    assert_eq!(c.release("order", "mod"), 1);
    woken(&mut py, "order");
}

#[test]
fn a_python_turn_not_taken_passes_to_the_next_module_waiter() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("slow", "holder");
    let mut py = python_waiter(&s, "slow", "0");
    s.wait_blocked(1);
    let mut module = Raw::connect(&s);
    module.send(&[&["LOCK.ACQUIRE", "slow", "mod", "60", "BLOCK", "0"]]);
    s.wait_blocked(2);
    assert_eq!(c.release("slow", "holder"), 1);
    woken(&mut py, "slow");
    // The python client never sends its SET: the module waiter gets the lock when the turn
    // (50 ms) ends.
    assert_eq!(
        module.read("the module waiter after an unused turn"),
        R::ok()
    );
    assert_eq!(c.owner("slow").as_deref(), Some("mod"));
    // Too late: python's SET NX fails, as it would against any holder.
    assert_eq!(
        py.call(&["SET", "lock:slow", "py-id", "NX", "EX", "60"]),
        R::nil()
    );
}

/// Whether the server has `name` as a command (`COMMAND INFO` answers nil for an unknown one).
fn has_command(c: &mut Raw, name: &str) -> bool {
    match c.call(&["COMMAND", "INFO", name]) {
        R::Array(Some(v)) => {
            !matches!(v.first(), None | Some(R::Array(None)) | Some(R::Bulk(None)))
        }
        _ => false,
    }
}

/// Valkey 9's `DELIFEQ lock:<n> <token>` (and Redis 8.4's `DELEX ... IFEQ`) is a token-checked
/// release without the module: it wakes the module's next waiter, and with none a python-redis-lock
/// waiter, like any delete. A `SET ... IFEQ` that keeps the lock held wakes nobody.
#[test]
fn a_native_conditional_release_wakes_module_and_python_waiters() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let del: &[&str] = if has_command(&mut c, "DELIFEQ") {
        &["DELIFEQ", "lock:n", "holder"]
    } else if has_command(&mut c, "DELEX") {
        &["DELEX", "lock:n", "IFEQ", "holder"]
    } else {
        eprintln!("skipped: the server has neither DELIFEQ nor DELEX");
        return;
    };
    c.acquire("n", "holder");
    let mut w = Raw::connect(&s);
    w.send(&[&["LOCK.ACQUIRE", "n", "next", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    // Valkey 8.1+ / Redis 8.4 (an error elsewhere): the holder renews by compare-and-set.
    let kept = c.call(&["SET", "lock:n", "holder", "IFEQ", "holder", "KEEPTTL"]);
    if kept == R::ok() {
        assert_eq!(
            w.next(QUIET),
            Err(End::Quiet),
            "a SET IFEQ keeping the lock held woke the waiter"
        );
    }
    let mut wrong = del.to_vec();
    *wrong.last_mut().unwrap() = "not-the-holder";
    assert_eq!(c.call(&wrong), R::Int(0), "a wrong token deletes nothing");
    assert_eq!(w.next(QUIET), Err(End::Quiet), "nothing was freed");
    assert_eq!(c.call(del), R::Int(1));
    w.answered_once(&R::ok(), "the module waiter after the native release");
    assert_eq!(c.owner("n").as_deref(), Some("next"));

    // The same with a python-redis-lock waiter and no module waiter.
    let mut py = python_waiter(&s, "n", "0");
    s.wait_blocked(1);
    let mut del2 = del.to_vec();
    *del2.last_mut().unwrap() = "next";
    assert_eq!(c.call(&del2), R::Int(1));
    woken(&mut py, "n");
}

// ---- the table of python waits: sweeps and overflow ----

/// Queue `n` `BLPOP lock-signal:<prefix><i> 0` in `MULTI` and discard them: the command filter
/// sees each (it runs when a command is queued), none ever blocks. Each is one watch in the
/// module's table until a sweep finds its client not blocked.
fn queue_blpops(c: &mut Raw, prefix: &str, n: usize) {
    let mut cmds: Vec<Vec<String>> = vec![vec!["MULTI".into()]];
    for i in 0..n {
        cmds.push(vec![
            "BLPOP".into(),
            format!("lock-signal:{prefix}{i}"),
            "0".into(),
        ]);
    }
    cmds.push(vec!["DISCARD".into()]);
    let refs: Vec<Vec<&str>> = cmds
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let slices: Vec<&[&str]> = refs.iter().map(|c| c.as_slice()).collect();
    c.send(&slices);
    for _ in 0..n + 2 {
        assert!(!matches!(c.read("queued"), R::Error(_)));
    }
}

/// The `BLPOP` whose arrival makes the table sweep itself is not swept with the others: it is
/// not blocked yet when the command filter sees it, and must still be woken by a release.
#[test]
fn the_blpop_that_triggers_a_sweep_is_still_woken() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("sweep", "t");
    // 1023 watches that never block; the 1024th, a real waiter, reaches the sweep point.
    queue_blpops(&mut c, "idle-", 1023);
    let mut py = Raw::connect(&s);
    py.send(&[&["BLPOP", "lock-signal:sweep", "0"]]);
    s.wait_blocked(1);
    assert_eq!(c.release("sweep", "t"), 1);
    woken(&mut py, "sweep");
}

/// Watches that never end by themselves (on Redis 7.0 the module cannot tell a `BLPOP`'s
/// client, so one queued and never blocked counts until its timeout, here none) overflow the
/// table: every freed lock is then signalled, but only until the waiters blocked at that moment
/// are gone. A real waiter is still woken; afterwards a lock nobody waits for is not signalled.
/// (On 7.2+ the same BLPOPs are swept away as they come: no overflow, the same answers.)
#[test]
fn an_overflow_of_python_waits_is_transient() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    c.acquire("real", "t");
    let mut py = Raw::connect(&s);
    py.send(&[&["BLPOP", "lock-signal:real", "0"]]);
    s.wait_blocked(1);
    // More than half of the most watches kept (2^18 / 2), in one pipelined MULTI.
    queue_blpops(&mut c, "gone-", (1 << 17) + 16);
    let followed = common::info_field(&mut s.conn(), "rlock", "rlock_python_waits_followed");
    assert!(followed <= 4096, "python_waits_followed: {followed}");
    // The real waiter is still woken.
    assert_eq!(c.release("real", "t"), 1);
    woken(&mut py, "real");
    // And nobody waits now: a freed lock is not signalled.
    c.acquire("nobody", "t");
    assert_eq!(c.release("nobody", "t"), 1);
    assert!(!signalled(&mut c, "nobody"), "signalled after the overflow");
    let R::Array(Some(fields)) = c.call(&["LOCK.INFO", "nobody"]) else {
        panic!("LOCK.INFO")
    };
    let i = fields
        .iter()
        .position(|f| *f == R::Bulk(Some(b"python".to_vec())))
        .unwrap();
    assert_eq!(fields[i + 1], R::Int(0), "LOCK.INFO python");
}
