//! The non-blocking contract of every LOCK.* command, against a real server.

mod common;
use common::*;
use redis::Value;

fn pttl(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(c).unwrap()
}

#[test]
fn acquire_owner_release_round_trip() {
    let s = Server::start();
    let mut c = s.conn();
    let ok: Option<String> = acquire("orders", "tok-1", 60, None).query(&mut c).unwrap();
    assert_eq!(ok.as_deref(), Some("OK"));
    assert_eq!(owner(&mut c, "orders").as_deref(), Some("tok-1"));
    // python-redis-lock's layout: lock:<name> holds the token, its TTL is the lease.
    let raw: String = redis::cmd("GET").arg("lock:orders").query(&mut c).unwrap();
    assert_eq!(raw, "tok-1");
    let ttl = pttl(&mut c, "lock:orders");
    assert!((59_000..=60_000).contains(&ttl), "pttl {ttl}");

    let busy: Option<String> = acquire("orders", "tok-2", 60, None).query(&mut c).unwrap();
    assert_eq!(busy, None, "held by another token: nil at once");
    assert_eq!(
        release(&mut c, "orders", "tok-2"),
        0,
        "a non-owner's release"
    );
    assert_eq!(
        owner(&mut c, "orders").as_deref(),
        Some("tok-1"),
        "…changes nothing"
    );
    assert_eq!(release(&mut c, "orders", "tok-1"), 1);
    assert_eq!(owner(&mut c, "orders"), None);
    assert_eq!(
        release(&mut c, "orders", "tok-1"),
        0,
        "releasing a free lock"
    );
}

#[test]
fn reacquire_by_the_owner_refreshes_the_lease() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("a", "t", 5, None).query(&mut c).unwrap();
    let again: String = acquire("a", "t", 100, None).query(&mut c).unwrap();
    assert_eq!(again, "OK");
    assert!(pttl(&mut c, "lock:a") > 90_000);
}

#[test]
fn renew_sets_the_lease_only_for_the_owner() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("a", "t", 5, None).query(&mut c).unwrap();
    let r: i64 = redis::cmd("LOCK.RENEW")
        .arg("a")
        .arg("t")
        .arg(300)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    assert!(pttl(&mut c, "lock:a") > 290_000);
    let r: i64 = redis::cmd("LOCK.RENEW")
        .arg("a")
        .arg("other")
        .arg(900)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 0);
    assert!(pttl(&mut c, "lock:a") <= 300_000);
    let r: i64 = redis::cmd("LOCK.RENEW")
        .arg("free")
        .arg("t")
        .arg(9)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 0);
    let exists: i64 = redis::cmd("EXISTS").arg("lock:free").query(&mut c).unwrap();
    assert_eq!(exists, 0, "renewing a free lock creates nothing");
}

#[test]
fn release_with_nobody_waiting_signals_python_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("a", "t", 60, None).query(&mut c).unwrap();
    python_tries(&mut c, "a");
    release(&mut c, "a", "t");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("lock-signal:a")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list, vec!["1"], "exactly python-redis-lock's DEL + LPUSH 1");
    let ttl = pttl(&mut c, "lock-signal:a");
    assert!((1..=1000).contains(&ttl), "signal PEXPIRE 1000, got {ttl}");
    // A second release signal replaces the list rather than growing it.
    let _: () = acquire("a", "t", 60, None).query(&mut c).unwrap();
    python_tries(&mut c, "a");
    release(&mut c, "a", "t");
    let len: i64 = redis::cmd("LLEN")
        .arg("lock-signal:a")
        .query(&mut c)
        .unwrap();
    assert_eq!(len, 1);
}

#[test]
fn resetall_removes_every_lock_whoever_made_it() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("m1", "t", 60, None).query(&mut c).unwrap();
    let _: () = acquire("m2", "t", 60, None).query(&mut c).unwrap();
    python_tries(&mut c, "m1");
    python_tries(&mut c, "m2");
    // As python-redis-lock takes a lock:
    let _: () = redis::cmd("SET")
        .arg("lock:py")
        .arg("pyid")
        .arg("NX")
        .arg("EX")
        .arg(60)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("unrelated")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    let _: () = acquire("other-db", "t", 60, None).query(&mut c).unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();

    let n: i64 = redis::cmd("LOCK.RESETALL").query(&mut c).unwrap();
    assert_eq!(n, 3);
    for name in ["m1", "m2", "py"] {
        assert_eq!(owner(&mut c, name), None);
        let len: i64 = redis::cmd("LLEN")
            .arg(format!("lock-signal:{name}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(len, 1, "{name} signalled");
    }
    let v: String = redis::cmd("GET").arg("unrelated").query(&mut c).unwrap();
    assert_eq!(v, "v");
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(
        owner(&mut c, "other-db").as_deref(),
        Some("t"),
        "only the current database"
    );
    let n: i64 = redis::cmd("LOCK.RESETALL").query(&mut c).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("held", "owner", 60, None).query(&mut c).unwrap();
    let table: &[(&[&str], &str)] = &[
        (&["LOCK.ACQUIRE", "a", "t"], "wrong number of arguments"),
        (
            &["LOCK.ACQUIRE", "a", "t", "10", "BLOCK"],
            "wrong number of arguments",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "10", "BLOCK", "5", "x"],
            "unknown option 'x'",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "0"],
            "ttl must be a positive integer number of seconds",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "-5"],
            "ttl must be a positive integer",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "1.5"],
            "ttl must be a positive integer",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "ten"],
            "ttl must be a positive integer",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "99999999999999999"],
            "ttl is out of range",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "99999999999999999999999"],
            "ttl must be a positive integer",
        ),
        (&["LOCK.ACQUIRE", "a", "", "10"], "token must not be empty"),
        (
            &["LOCK.ACQUIRE", "a", "t", "10", "BLOCK", "-1"],
            "BLOCK must be a non-negative integer",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "10", "BLOCK", "soon"],
            "BLOCK must be a non-negative integer",
        ),
        (
            &["LOCK.ACQUIRE", "a", "t", "10", "WAIT", "5"],
            "unknown option 'WAIT'",
        ),
        (
            &["LOCK.ACQUIRE", "held", "t", "0", "BLOCK", "10"],
            "ttl must be",
        ),
        (&["LOCK.RELEASE", "held"], "wrong number of arguments"),
        (&["LOCK.RELEASE", "held", ""], "token must not be empty"),
        (
            &["LOCK.RENEW", "held", "owner"],
            "wrong number of arguments",
        ),
        (
            &["LOCK.RENEW", "held", "owner", "0"],
            "ttl must be a positive integer",
        ),
        (
            &["LOCK.RENEW", "held", "owner", "x"],
            "ttl must be a positive integer",
        ),
        (&["LOCK.OWNER"], "wrong number of arguments"),
        (&["LOCK.OWNER", "a", "b"], "wrong number of arguments"),
        (&["LOCK.RESETALL", "now"], "wrong number of arguments"),
    ];
    let before: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let ttl_before = pttl(&mut c, "lock:held");
    for (args, want) in table {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let err = cmd
            .query::<Value>(&mut c)
            .expect_err(&format!("{args:?} must fail"));
        let text = format!("{err}");
        assert!(text.contains(want), "{args:?}: got {text:?}, want {want:?}");
    }
    let after: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(before, after, "no key created or removed");
    assert_eq!(owner(&mut c, "held").as_deref(), Some("owner"));
    assert!(pttl(&mut c, "lock:held") <= ttl_before, "lease not touched");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG", "the server keeps serving");
}

#[test]
fn a_lock_key_of_another_type_is_wrongtype() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("HSET")
        .arg("lock:h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("lock:l")
        .arg("x")
        .query(&mut c)
        .unwrap();
    for name in ["h", "l"] {
        for args in [
            vec!["LOCK.ACQUIRE", name, "t", "10"],
            vec!["LOCK.ACQUIRE", name, "t", "10", "BLOCK", "100"],
            vec!["LOCK.RELEASE", name, "t"],
            vec!["LOCK.RENEW", name, "t", "10"],
            vec!["LOCK.OWNER", name],
        ] {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let err = cmd.query::<Value>(&mut c).expect_err("must fail");
            assert!(format!("{err}").contains("WRONGTYPE"), "{args:?}: {err}");
        }
    }
    let t: String = redis::cmd("TYPE").arg("lock:h").query(&mut c).unwrap();
    assert_eq!(t, "hash", "untouched");
    let blocked = info_field(&mut c, "clients", "blocked_clients");
    assert_eq!(blocked, 0);
}

#[test]
fn command_docs_describe_every_command() {
    let s = Server::start();
    let mut c = s.conn();
    for name in [
        "lock.acquire",
        "lock.release",
        "lock.renew",
        "lock.owner",
        "lock.resetall",
    ] {
        let docs: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let text = format!("{docs:?}");
        assert!(text.contains("summary"), "{name}: {text}");
    }
    // The name argument routes like a key (cluster) but is flagged not_key (ACL checks the real keys).
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("LOCK.ACQUIRE")
        .arg("orders")
        .arg("t")
        .arg("5")
        .query(&mut c)
        .unwrap_or_default();
    let info: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("lock.acquire")
        .query(&mut c)
        .unwrap();
    assert!(
        format!("{info:?}").contains("not_key"),
        "{info:?} / getkeys {keys:?}"
    );
}

#[test]
fn binary_names_and_tokens_are_not_patterns() {
    let s = Server::start();
    let mut c = s.conn();
    let name: &[u8] = b"a*b?[c]\0 d";
    let token: &[u8] = b"\0tok en*";
    let ok: String = redis::cmd("LOCK.ACQUIRE")
        .arg(name)
        .arg(token)
        .arg(30)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let got: Vec<u8> = redis::cmd("LOCK.OWNER").arg(name).query(&mut c).unwrap();
    assert_eq!(got, token);
    // A name that the first one would match as a glob pattern is a different lock.
    let other: Option<String> = redis::cmd("LOCK.ACQUIRE")
        .arg(&b"aXbY[c]\0 d"[..])
        .arg("t")
        .arg(30)
        .query(&mut c)
        .unwrap();
    assert_eq!(other.as_deref(), Some("OK"));
    let big = vec![b'x'; 1 << 20];
    let ok: String = redis::cmd("LOCK.ACQUIRE")
        .arg(&big[..])
        .arg(&big[..])
        .arg(30)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let r: i64 = redis::cmd("LOCK.RELEASE")
        .arg(&big[..])
        .arg(&big[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let r: i64 = redis::cmd("LOCK.RELEASE")
        .arg(name)
        .arg(token)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
}

#[test]
fn writes_are_refused_on_a_replica_and_owner_works_there() {
    let primary = Server::with(Options {
        tcp: true,
        ..Options::default()
    });
    let replica = replica_of(&primary, true);
    let mut p = primary.conn();
    let _: () = acquire("a", "t", 60, None).query(&mut p).unwrap();
    sync_replicas(&mut p, 1);
    let mut r = replica.conn();
    assert_eq!(owner(&mut r, "a").as_deref(), Some("t"));
    let err = acquire("b", "t", 60, None)
        .query::<Value>(&mut r)
        .expect_err("read-only replica");
    assert!(
        format!("{err}")
            .to_lowercase()
            .contains("read only replica"),
        "{err}"
    );
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert_eq!(dbsize, 1);
}

#[test]
fn a_lock_deleted_by_another_client_signals_python_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = acquire("a", "t", 60, None).query(&mut c).unwrap();
    python_tries(&mut c, "a");
    let _: i64 = redis::cmd("DEL").arg("lock:a").query(&mut c).unwrap();
    // The signal is written by the module's deferred look at the lock: wait for it.
    let start = std::time::Instant::now();
    while redis::cmd("LLEN")
        .arg("lock-signal:a")
        .query::<i64>(&mut c)
        .unwrap()
        == 0
    {
        assert!(start.elapsed() < DEADLINE, "no signal after a foreign DEL");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!((1..=1000).contains(&pttl(&mut c, "lock-signal:a")));
}
