//! Smaller defects, each pinned by a test that fails where the defect exists: error texts as
//! Redis spells them, integers parsed as Redis parses them, calls that change nothing leaving
//! WATCH, client tracking and value encodings alone, keyspace notifications for the module's
//! writes, one token queued twice, nothing armed after the last waiter leaves, and a
//! `lock-signal:<name>` of another type left alone, and a client left in its database by
//! `MOVE` and `COPY ... DB`.
//!
//! Replies are read on raw connections (RESP by hand) so that error texts are seen exactly as
//! sent; every read has a deadline.

mod common;
use common::raw::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

/// A reply as text, bulk strings shown as strings.
fn show(r: &R) -> String {
    match r {
        R::Bulk(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
        R::Array(Some(items)) => {
            let items: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn err(r: &R) -> &str {
    match r {
        R::Error(e) => e,
        other => panic!("wanted an error, got {other:?}"),
    }
}

fn dbsize(c: &mut Raw) -> i64 {
    c.call(&["DBSIZE"]).int()
}

// ---- 1. arity errors ----

/// The module's own arity errors (LOCK.ACQUIRE with BLOCK and no ms, which the declared arity -4
/// lets through) read exactly as the server's own for a count it refuses.
#[test]
fn arity_errors_are_spelled_as_the_server_spells_them() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    // The server's own check (arity -4): its spelling of the command's name.
    let server = c.call(&["LOCK.ACQUIRE", "a"]);
    let server = err(&server).to_string();
    let name = server
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no name in {server:?}"))
        .to_string();
    assert_eq!(
        server,
        format!("ERR wrong number of arguments for '{name}' command")
    );
    assert!(name.eq_ignore_ascii_case("LOCK.ACQUIRE"), "{server}");
    let same_case = |cmd: &str| {
        if name == name.to_uppercase() {
            cmd.to_uppercase()
        } else {
            cmd.to_lowercase()
        }
    };
    let table: &[&[&str]] = &[
        &["LOCK.ACQUIRE", "a", "t", "1", "BLOCK"],
        &["lock.acquire", "a", "t", "1", "block"],
        // And the counts the server refuses for the other commands.
        &["LOCK.RELEASE", "a"],
        &["LOCK.RELEASE", "a", "t", "x"],
        &["LOCK.RENEW", "a", "t"],
        &["LOCK.RENEW", "a", "t", "1", "x"],
        &["LOCK.OWNER"],
        &["LOCK.OWNER", "a", "b"],
        &["LOCK.RESETALL", "x"],
    ];
    for args in table {
        let want = format!(
            "ERR wrong number of arguments for '{}' command",
            same_case(args[0])
        );
        assert_eq!(err(&c.call(args)), want, "{args:?}");
    }
    // Options come in any order, each at most once: a repeated or unknown one is an error.
    assert_eq!(
        err(&c.call(&["LOCK.ACQUIRE", "a", "t", "1", "BLOCK", "5", "x"])),
        "ERR unknown option 'x' (expected BLOCK ms, FENCE or BIND)"
    );
    assert_eq!(
        err(&c.call(&["LOCK.ACQUIRE", "a", "t", "1", "BLOCK", "5", "BLOCK", "5"])),
        "ERR BLOCK given twice"
    );
    // Past the longest valid call (8 arguments) too: the option error, not an arity error.
    let long: &[(&[&str], &str)] = &[
        (
            &[
                "LOCK.ACQUIRE",
                "n",
                "t",
                "10",
                "BLOCK",
                "5",
                "FENCE",
                "BIND",
                "BIND",
            ],
            "ERR BIND given twice",
        ),
        (
            &[
                "LOCK.ACQUIRE",
                "n",
                "t",
                "10",
                "FENCE",
                "BIND",
                "BLOCK",
                "5",
                "FENCE",
            ],
            "ERR FENCE given twice",
        ),
        (
            &[
                "LOCK.ACQUIRE",
                "n",
                "t",
                "10",
                "BLOCK",
                "5",
                "FENCE",
                "BIND",
                "BLOCK",
                "5",
            ],
            "ERR BLOCK given twice",
        ),
        (
            &[
                "LOCK.ACQUIRE",
                "n",
                "t",
                "10",
                "BLOCK",
                "5",
                "FENCE",
                "BIND",
                "nope",
                "x",
                "y",
            ],
            "ERR unknown option 'nope' (expected BLOCK ms, FENCE or BIND)",
        ),
    ];
    for (args, want) in long {
        assert_eq!(err(&c.call(args)), *want, "{args:?}");
    }
    assert_eq!(dbsize(&mut c), 0, "nothing changed");
}

// ---- 2. an unknown option is not echoed whole ----

#[test]
fn an_unknown_option_error_does_not_echo_a_huge_argument() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let huge = vec![b'x'; 1 << 20];
    let args: [&[u8]; 6] = [b"LOCK.ACQUIRE", b"a", b"t", b"1", &huge, b"5"];
    let reply = c.call(&args);
    let text = err(&reply);
    assert!(
        text.len() < 300,
        "a {} byte error reply: {}...",
        text.len(),
        text.get(..200).unwrap_or(text)
    );
    assert!(text.contains("unknown option"), "{text}");
    let run = text.split(|ch| ch != 'x').map(str::len).max().unwrap_or(0);
    assert!(
        (1..=128).contains(&run),
        "the option, cut to at most 128 bytes as Redis does ('%.128s'): {text}"
    );
    assert_eq!(c.owner("a"), None, "nothing changed");
    assert_eq!(dbsize(&mut c), 0);
    assert_eq!(c.call(&["PING"]), R::Status("PONG".into()));
}

// ---- 3. integers as Redis parses them ----

/// Redis's own integer parser (`string2ll`) refuses leading zeros, signs on zero, a plus sign
/// and spaces: so do `ttl` and `BLOCK ms`, and a refused call changes nothing.
#[test]
fn integers_follow_redis_own_parser() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let bad = [
        "007",
        "01",
        "0000000000000000000001",
        "-0",
        "+1",
        " 1",
        "1 ",
        "",
    ];
    c.acquire("held", "owner");
    let expiry = c.call(&["PEXPIRETIME", "lock:held"]).int();
    for v in bad {
        for args in [
            vec!["LOCK.ACQUIRE", "free", "t", v],
            vec!["LOCK.ACQUIRE", "free", "t", v, "BLOCK", "0"],
            vec!["LOCK.ACQUIRE", "free", "t", "10", "BLOCK", v],
            vec!["LOCK.ACQUIRE", "held", "owner", v],
            vec!["LOCK.RENEW", "held", "owner", v],
        ] {
            let r = c.call(&args);
            assert!(matches!(r, R::Error(_)), "{args:?} accepted: {r:?}");
        }
    }
    assert_eq!(c.owner("free"), None, "nothing changed");
    assert_eq!(c.call(&["PEXPIRETIME", "lock:held"]).int(), expiry);
    assert_eq!(dbsize(&mut c), 1);
    // The smallest values that are fine.
    let ok = c.call(&["LOCK.ACQUIRE", "free", "t", "1", "BLOCK", "0"]);
    assert_eq!(ok, R::ok());
    assert_eq!(c.call(&["LOCK.RENEW", "free", "t", "1"]), R::Int(1));
}

// ---- 4. calls that change nothing do not touch the keys ----

/// The no-op calls: (what, command) with `lock:n` held by `owner` and `lock:m` free.
fn no_op_calls() -> Vec<Vec<&'static str>> {
    vec![
        vec!["LOCK.RELEASE", "n", "wrongtoken"],
        vec!["LOCK.RENEW", "n", "wrongtoken", "10"],
        vec!["LOCK.ACQUIRE", "n", "other", "10"],
        vec!["LOCK.ACQUIRE", "n", "other", "10", "BLOCK", "20"],
        vec!["LOCK.OWNER", "n"],
        vec!["LOCK.RELEASE", "m", "t"],
        vec!["LOCK.RENEW", "m", "t", "10"],
        vec!["LOCK.OWNER", "m"],
    ]
}

fn no_op_reply(cmd: &[&str]) -> R {
    match (cmd[0], cmd[1]) {
        ("LOCK.OWNER", "n") => R::Bulk(Some(b"owner".to_vec())),
        ("LOCK.OWNER", _) | ("LOCK.ACQUIRE", _) => R::nil(),
        _ => R::Int(0),
    }
}

#[test]
fn calls_that_change_nothing_do_not_abort_a_watch() {
    let s = Server::start();
    let mut a = Raw::connect(&s);
    let mut b = Raw::connect(&s);
    b.acquire("n", "owner");
    let mut aborted = Vec::new();
    for cmd in no_op_calls() {
        let key = format!("lock:{}", cmd[1]);
        let signal = format!("lock-signal:{}", cmd[1]);
        assert_eq!(a.call(&["WATCH", &key, &signal]), R::ok());
        assert_eq!(b.call(&cmd), no_op_reply(&cmd), "{cmd:?}");
        a.send(&[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
        assert_eq!(a.read("MULTI"), R::ok());
        assert_eq!(a.read("SET"), R::Status("QUEUED".into()));
        if a.read("EXEC") != R::Array(Some(vec![R::ok()])) {
            aborted.push(cmd.join(" "));
        }
    }
    assert!(aborted.is_empty(), "WATCH aborted by: {aborted:?}");
    assert_eq!(b.owner("n").as_deref(), Some("owner"));
}

/// A client tracking (with redirect) the keys it read gets no invalidation from calls that
/// change nothing; a real release does invalidate.
#[test]
fn calls_that_change_nothing_send_no_tracking_invalidation() {
    let s = Server::start();
    let mut b = Raw::connect(&s);
    b.acquire("n", "owner");
    let mut sink = Raw::connect(&s);
    let sink_id = sink.call(&["CLIENT", "ID"]).int().to_string();
    let sub = sink.call(&["SUBSCRIBE", "__redis__:invalidate"]);
    assert!(matches!(sub, R::Array(Some(_))), "{sub:?}");
    let mut a = Raw::connect(&s);
    assert_eq!(
        a.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &sink_id]),
        R::ok()
    );
    let mut invalidated = Vec::new();
    for cmd in no_op_calls() {
        // Read the key (again), so that it is tracked.
        a.call(&["GET", &format!("lock:{}", cmd[1])]);
        a.call(&["EXISTS", &format!("lock-signal:{}", cmd[1])]);
        assert_eq!(b.call(&cmd), no_op_reply(&cmd), "{cmd:?}");
        // Invalidations are sent as the command ends: PING the sink's server through `a`, then
        // a short bounded wait for one that should not come.
        a.call(&["PING"]);
        if let Ok(msg) = sink.next(Duration::from_millis(50)) {
            invalidated.push(format!("{}: {}", cmd.join(" "), show(&msg)));
        }
    }
    assert!(invalidated.is_empty(), "invalidated by: {invalidated:#?}");
    // A real change is seen: the setup works.
    a.call(&["GET", "lock:n"]);
    assert_eq!(b.release("n", "owner"), 1);
    let msg = show(&sink.read("invalidation after a real release"));
    assert!(msg.contains("lock:n"), "{msg}");
}

// ---- 5. LOCK.OWNER leaves the value's encoding alone ----

#[test]
fn lock_owner_does_not_change_the_value_encoding() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    assert_eq!(c.call(&["SET", "lock:n", "12345"]), R::ok());
    assert_eq!(c.call(&["SET", "lock:n2", "shorttoken"]), R::ok());
    let encoding = |c: &mut Raw, key: &str| c.call(&["OBJECT", "ENCODING", key]).text().unwrap();
    assert_eq!(encoding(&mut c, "lock:n"), "int");
    assert_eq!(encoding(&mut c, "lock:n2"), "embstr");
    assert_eq!(c.owner("n").as_deref(), Some("12345"));
    assert_eq!(c.owner("n2").as_deref(), Some("shorttoken"));
    assert_eq!(encoding(&mut c, "lock:n"), "int", "after LOCK.OWNER");
    assert_eq!(encoding(&mut c, "lock:n2"), "embstr", "after LOCK.OWNER");
}

// ---- 6. keyspace notifications for the module's writes ----

type Events = BTreeMap<String, BTreeSet<String>>;

fn events(list: &[(&str, &[&str])]) -> Events {
    list.iter()
        .map(|(k, evs)| (k.to_string(), evs.iter().map(|e| e.to_string()).collect()))
        .collect()
}

/// Collect the keyspace events on lock keys: with `deferred`, until `want` has been seen (the
/// module's deferred writes); then until the sentinel key's event, which comes after
/// everything the commands before it caused.
fn seen(sub: &mut Raw, c: &mut Raw, want: &Events, deferred: bool) -> Events {
    let mut got = Events::new();
    let record = |msg: R, got: &mut Events| -> bool {
        let R::Array(Some(parts)) = msg else {
            panic!("not a pubsub message: {msg:?}")
        };
        let channel = parts[2].text().unwrap();
        let event = parts[3].text().unwrap();
        let key = channel.split_once("__:").unwrap().1.to_string();
        if key == "sentinel" {
            return true;
        }
        got.entry(key).or_default().insert(event);
        false
    };
    if deferred {
        let start = Instant::now();
        while !want
            .iter()
            .all(|(k, evs)| got.get(k).is_some_and(|g| g.is_superset(evs)))
        {
            match sub.next(Duration::from_millis(20)) {
                Ok(msg) => {
                    record(msg, &mut got);
                }
                Err(End::Quiet) if start.elapsed() < DEADLINE => {}
                Err(e) => panic!("waiting for {want:?}: {e:?}, seen {got:?}"),
            }
        }
    }
    assert_eq!(c.call(&["SET", "sentinel", "x"]), R::ok());
    loop {
        if record(sub.read("keyspace events"), &mut got) {
            return got;
        }
    }
}

#[test]
fn module_writes_emit_keyspace_notifications_like_core_commands() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    assert_eq!(
        c.call(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
        R::ok()
    );
    let mut sub = Raw::connect(&s);
    sub.send(&[&[
        "PSUBSCRIBE",
        "__keyspace@0__:lock:*",
        "__keyspace@0__:lock-signal:*",
        "__keyspace@0__:sentinel",
    ]]);
    for _ in 0..3 {
        let r = sub.read("PSUBSCRIBE");
        assert!(matches!(r, R::Array(Some(_))), "{r:?}");
    }
    let mut step = |c: &mut Raw, what: &str, cmds: &[&[&str]], want: Events, deferred: bool| {
        // The signal key starts out absent, as before python-redis-lock's first release.
        c.call(&["DEL", "lock-signal:n"]);
        seen(&mut sub, c, &Events::new(), false);
        for cmd in cmds {
            let r = c.call(cmd);
            assert!(!matches!(r, R::Error(_)), "{what}: {cmd:?}: {r:?}");
        }
        let got = seen(&mut sub, c, &want, deferred);
        assert_eq!(got, want, "{what}: keyspace events per key");
    };
    step(
        &mut c,
        "LOCK.ACQUIRE of a free lock (as SET ... PXAT)",
        &[&["LOCK.ACQUIRE", "n", "t", "10"]],
        events(&[("lock:n", &["set", "expire"])]),
        false,
    );
    step(
        &mut c,
        "LOCK.ACQUIRE by the owner (as PEXPIREAT)",
        &[&["LOCK.ACQUIRE", "n", "t", "20"]],
        events(&[("lock:n", &["expire"])]),
        false,
    );
    step(
        &mut c,
        "LOCK.RENEW (as PEXPIREAT)",
        &[&["LOCK.RENEW", "n", "t", "30"]],
        events(&[("lock:n", &["expire"])]),
        false,
    );
    step(
        &mut c,
        "calls that change nothing",
        &[
            &["LOCK.RELEASE", "n", "wrong"],
            &["LOCK.RENEW", "n", "wrong", "5"],
            &["LOCK.ACQUIRE", "n", "other", "5"],
            &["LOCK.OWNER", "n"],
        ],
        Events::new(),
        false,
    );
    // From here on a python-redis-lock client has tried n and may wait for it.
    c.python_tries("n");
    step(
        &mut c,
        "LOCK.RELEASE with nobody waiting (as DEL, LPUSH, PEXPIREAT)",
        &[&["LOCK.RELEASE", "n", "t"]],
        events(&[
            ("lock:n", &["del"]),
            ("lock-signal:n", &["lpush", "expire"]),
        ]),
        false,
    );
    // A hand-over to a waiter: the owner is replaced (as SET ... PXAT), nothing is signalled.
    c.call(&["LOCK.ACQUIRE", "n", "t", "10"]);
    let w = spawn_blocked::<Option<String>>(&s, acquire("n", "w", 10, Some(0)));
    step(
        &mut c,
        "LOCK.RELEASE handing the lock over",
        &[&["LOCK.RELEASE", "n", "t"]],
        events(&[("lock:n", &["set", "expire"])]),
        false,
    );
    assert_eq!(w.wait().unwrap().as_deref(), Some("OK"));
    step(
        &mut c,
        "a foreign DEL, then the module's signal",
        &[&["DEL", "lock:n"]],
        events(&[
            ("lock:n", &["del"]),
            ("lock-signal:n", &["lpush", "expire"]),
        ]),
        true,
    );
}

// ---- 7. one token queued on two connections ----

#[test]
fn the_same_token_queued_twice_is_answered_ok_on_both_connections() {
    let s = Server::start();
    let mut c = s.conn();
    let _: String = acquire("x", "h", 60, None).query(&mut c).unwrap();
    let first = spawn_blocked::<Option<String>>(&s, acquire("x", "t", 10, Some(0)));
    let second = spawn_blocked::<Option<String>>(&s, acquire("x", "t", 10, Some(2000)));
    let released = Instant::now();
    assert_eq!(release(&mut c, "x", "h"), 1);
    assert_eq!(first.wait().unwrap().as_deref(), Some("OK"));
    assert_eq!(
        second.wait().unwrap().as_deref(),
        Some("OK"),
        "the same token owns the lock: answered {:?} after the release",
        released.elapsed()
    );
    assert_eq!(owner(&mut c, "x").as_deref(), Some("t"));
    s.wait_blocked(0);
}

// ---- 8. nothing stays armed after the last waiter leaves ----

#[test]
fn nothing_stays_armed_after_the_last_waiter_leaves() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "n", "holder", "3600"]), R::ok());
    let r = c.call(&["LOCK.ACQUIRE", "n", "w", "60", "BLOCK", "100"]);
    assert_eq!(r, R::nil());
    s.wait_blocked(0);
    let r = c.call(&["MODULE", "UNLOAD", "rlock"]);
    assert_eq!(r, R::ok(), "nothing should keep the module loaded");
    assert_eq!(
        c.call(&["GET", "lock:n"]),
        R::Bulk(Some(b"holder".to_vec())),
        "the lock itself stays"
    );
}

// ---- 9. a lock-signal:<name> of another type is left alone ----

/// Give the module its chance to act on what happened to `lock:<name>` so far: a foreign DEL
/// of another lock is looked at in the same deferred pass (or a later one), and its signal
/// shows when that pass has run.
fn let_the_module_act(c: &mut Raw) {
    assert_eq!(c.call(&["LOCK.ACQUIRE", "probe", "t", "60"]), R::ok());
    c.python_tries("probe");
    assert_eq!(c.call(&["DEL", "lock:probe"]), R::Int(1));
    let start = Instant::now();
    while c.call(&["EXISTS", "lock-signal:probe"]) != R::Int(1) {
        assert!(
            start.elapsed() < DEADLINE,
            "the module never signalled probe"
        );
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(50));
    c.call(&["DEL", "lock-signal:probe"]);
}

#[test]
fn a_signal_key_of_another_type_is_left_alone_on_delete_and_expiry() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let types: &[(&str, &[&str])] = &[
        ("hash", &["HSET", "lock-signal:n", "f", "v"]),
        ("string", &["SET", "lock-signal:n", "mine"]),
        ("set", &["SADD", "lock-signal:n", "m"]),
        ("stream", &["XADD", "lock-signal:n", "1-1", "f", "v"]),
    ];
    let mut replaced = Vec::new();
    for (kind, make) in types {
        for how in ["DEL", "expiry"] {
            c.call(&["DEL", "lock-signal:n"]);
            let r = c.call(make);
            assert!(!matches!(r, R::Error(_)), "{make:?}: {r:?}");
            let before = c.call(&["DUMP", "lock-signal:n"]);
            assert_eq!(c.call(&["LOCK.ACQUIRE", "n", "t", "1"]), R::ok());
            c.python_tries("n"); // so that the module would signal n
            if how == "DEL" {
                assert_eq!(c.call(&["DEL", "lock:n"]), R::Int(1));
            } else {
                assert_eq!(c.call(&["PEXPIRE", "lock:n", "20"]), R::Int(1));
                let start = Instant::now();
                // EXISTS expires the key once its time is up (as active expiry would).
                while c.call(&["EXISTS", "lock:n"]) != R::Int(0) {
                    assert!(start.elapsed() < DEADLINE, "lock:n never expired");
                    thread::sleep(Duration::from_millis(2));
                }
            }
            let_the_module_act(&mut c);
            let t = c.call(&["TYPE", "lock-signal:n"]);
            let after = c.call(&["DUMP", "lock-signal:n"]);
            let ttl = c.call(&["PTTL", "lock-signal:n"]);
            if t != R::Status(kind.to_string()) || after != before || ttl != R::Int(-1) {
                replaced.push(format!("{kind} after {how}: now {t:?}, pttl {ttl:?}"));
            }
        }
    }
    assert!(
        replaced.is_empty(),
        "signal keys not left alone: {replaced:#?}"
    );
}

// ---- 9. the client stays in its database ----

/// The database the connection is in, as the server reports it.
fn client_db(c: &mut Raw) -> String {
    let info = match c.call(&["CLIENT", "INFO"]) {
        R::Bulk(Some(b)) => String::from_utf8_lossy(&b).to_string(),
        other => panic!("CLIENT INFO: {other:?}"),
    };
    info.split_whitespace()
        .find_map(|f| f.strip_prefix("db="))
        .unwrap_or_else(|| panic!("no db= in {info:?}"))
        .to_string()
}

/// `MOVE` and `COPY ... DB` of any key, lock or not, leave the calling connection in its own
/// database. Valkey 8.1 switches it to the destination whenever a module listens to keyspace
/// events (valkey-io/valkey#4024); rlock selects it back.
#[test]
fn move_and_copy_to_another_database_leave_the_client_where_it_was() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let mut wrong = Vec::new();
    for key in ["plain", "lock:moved"] {
        let steps: [(&str, Vec<&str>); 3] = [
            ("MOVE", vec!["MOVE", key, "1"]),
            ("COPY ... DB", vec!["COPY", key, key, "DB", "2"]),
            (
                "COPY ... DB ... REPLACE",
                vec!["COPY", key, key, "DB", "2", "REPLACE"],
            ),
        ];
        for (what, cmd) in steps {
            assert_eq!(c.call(&["SELECT", "0"]), R::ok());
            c.call(&["FLUSHALL"]);
            assert_eq!(c.call(&["SET", key, "v"]), R::ok());
            assert_eq!(c.call(&cmd), R::Int(1), "{cmd:?}");
            let db = client_db(&mut c);
            let get = c.call(&["GET", key]);
            let expected = if what == "MOVE" {
                R::Bulk(None)
            } else {
                R::Bulk(Some(b"v".to_vec()))
            };
            if db != "0" || get != expected {
                wrong.push(format!(
                    "{what} of {key}: client in db {db}, GET {key} = {get:?}"
                ));
            }
        }
    }
    // In a transaction, MOVE too.
    assert_eq!(c.call(&["SELECT", "0"]), R::ok());
    c.call(&["FLUSHALL"]);
    c.call(&["SET", "lock:tx", "v"]);
    assert_eq!(c.call(&["MULTI"]), R::ok());
    c.call(&["MOVE", "lock:tx", "3"]);
    c.call(&["GET", "lock:tx"]);
    let exec = c.call(&["EXEC"]);
    if exec != R::Array(Some(vec![R::Int(1), R::Bulk(None)])) || client_db(&mut c) != "0" {
        wrong.push(format!(
            "MULTI MOVE GET EXEC: {exec:?}, client in db {}",
            client_db(&mut c)
        ));
    }
    // Held back by a pause while other clients' commands run, then served.
    assert_eq!(c.call(&["SELECT", "0"]), R::ok());
    c.call(&["FLUSHALL"]);
    c.call(&["SET", "lock:held", "v"]);
    let mut admin = Raw::connect(&s);
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "10000", "WRITE"]), R::ok());
    c.send(&[&["COPY", "lock:held", "lock:held", "DB", "4"]]);
    s.wait_blocked(1);
    admin.call(&["GET", "lock:held"]);
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), R::ok());
    let copied = c.read("COPY held back by a pause");
    if copied != R::Int(1) || client_db(&mut c) != "0" {
        wrong.push(format!(
            "paused COPY: {copied:?}, client in db {}",
            client_db(&mut c)
        ));
    }
    assert!(wrong.is_empty(), "the client was moved: {wrong:#?}");
}

// ---- 10. server-made tokens ----

fn made_token(r: &R) -> String {
    let token = match r {
        R::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("wanted the server-made token, got {other:?}"),
    };
    assert_eq!(token.len(), 24, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "base64: {token}"
    );
    token
}

/// `LOCK.ACQUIRE name * ttl`: the server makes the token (as python-redis-lock makes its ids)
/// and replies it instead of `OK`, at once or when a waiter is handed the lock.
#[test]
fn a_star_token_is_made_by_the_server_and_replied() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let first = made_token(&c.call(&["LOCK.ACQUIRE", "m", "*", "60"]));
    assert_eq!(c.owner("m").as_deref(), Some(first.as_str()));
    // Held: nil, and nothing changes.
    assert_eq!(c.call(&["LOCK.ACQUIRE", "m", "*", "60"]), R::nil());
    // A waiter with `*` gets its own token when the lock is handed to it.
    let mut w = Raw::connect(&s);
    w.send(&[&["LOCK.ACQUIRE", "m", "*", "60", "BLOCK", "0"]]);
    s.wait_blocked(1);
    assert_eq!(c.release("m", &first), 1);
    let second = made_token(&w.read("the waiter's token"));
    assert_ne!(first, second);
    assert_eq!(c.owner("m").as_deref(), Some(second.as_str()));
    // A waiter with `*` that times out gets nil, as any other.
    assert_eq!(
        c.call(&["LOCK.ACQUIRE", "m", "*", "60", "BLOCK", "10"]),
        R::nil()
    );
    assert_eq!(c.release("m", &second), 1);
    // Tokens do not repeat.
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        let name = format!("n{i}");
        assert!(seen.insert(made_token(&c.call(&["LOCK.ACQUIRE", &name, "*", "60"]))));
    }
}
