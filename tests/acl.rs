//! Rights are the server's rights (PROTOCOL.md, promise 5): a user may do through LOCK.* only
//! what the server would let it do with the equivalent core commands on the real keys, judged
//! the server's way (one selector allows the command and all its keys, `%R~`/`%W~` split read
//! and write).

mod common;
use common::raw::{Raw, R};
use common::*;
use redis::Value;

fn setuser(admin: &mut Raw, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER"];
    args.extend_from_slice(rules);
    assert_eq!(admin.call(&args), R::ok(), "ACL SETUSER {rules:?}");
}

/// A connection authenticated as `user` (password `pw`).
fn login(s: &Server, user: &str) -> Raw {
    let mut c = Raw::connect(s);
    assert_eq!(c.call(&["AUTH", user, "pw"]), R::ok(), "AUTH {user}");
    c
}

#[track_caller]
fn refused(r: R, what: &str) -> String {
    match r {
        R::Error(e) if e.starts_with("NOPERM") => e,
        other => panic!("{what}: wanted NOPERM, got {other:?}"),
    }
}

const WRITE_REFUSED: &str =
    "NOPERM this user has no permissions to read and write the lock's keys (lock:<name> and lock-signal:<name>) in one command (checked as LMPOP on them)";
const FENCED_WRITE_REFUSED: &str =
    "NOPERM this user has no permissions to read and write the lock's keys (lock:<name>, lock-signal:<name> and lock-fence:<name>) in one command (checked as LMPOP on them)";
const READ_REFUSED: &str =
    "NOPERM this user has no permissions to read the lock's key (lock:<name>; checked as GET on it)";

/// The field names of a LOCK.INFO reply (RESP2: a flat field/value array).
fn info_fields(r: &R) -> Vec<String> {
    let R::Array(Some(items)) = r else {
        panic!("LOCK.INFO: {r:?}")
    };
    items
        .iter()
        .step_by(2)
        .map(|f| f.text().unwrap_or_default())
        .collect()
}

/// The review's example: the root selector may do anything to app1's lock keys; a selector
/// may only GET any lock key. The server refuses `SET lock:app2:orders`; LOCK.ACQUIRE of
/// app2:orders used to pass (each key was checked alone, against any selector).
#[test]
fn a_write_needs_one_selector_allowing_the_command_and_every_key() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    setuser(
        &mut admin,
        &[
            "u",
            "on",
            ">pw",
            "~lock:app1:*",
            "~lock-signal:app1:*",
            "+@all",
            "-@dangerous",
            "(+get ~lock:* ~lock-signal:*)",
        ],
    );
    let mut u = login(&s, "u");
    refused(
        u.call(&["SET", "lock:app2:orders", "tok"]),
        "the server's own SET",
    );
    for args in [
        &["LOCK.ACQUIRE", "app2:orders", "tok", "100"][..],
        &["LOCK.ACQUIRE", "app2:orders", "tok", "100", "BLOCK", "100"],
        &["LOCK.ACQUIRE", "app2:orders", "*", "100", "BIND"],
    ] {
        assert_eq!(refused(u.call(args), "LOCK.ACQUIRE app2"), WRITE_REFUSED);
    }
    admin.acquire("app2:held", "holder");
    let ttl = admin.call(&["PTTL", "lock:app2:held"]).int();
    assert_eq!(
        refused(u.call(&["LOCK.RELEASE", "app2:held", "holder"]), "RELEASE"),
        WRITE_REFUSED
    );
    assert_eq!(
        refused(
            u.call(&["LOCK.RENEW", "app2:held", "holder", "9999"]),
            "RENEW"
        ),
        WRITE_REFUSED
    );
    // What the selector does allow: reading the lock (GET lock:app2:held).
    assert_eq!(u.owner("app2:held").as_deref(), Some("holder"));
    assert_eq!(admin.owner("app2:held").as_deref(), Some("holder"));
    assert!(admin.call(&["PTTL", "lock:app2:held"]).int() <= ttl);
    // The root selector's locks.
    assert_eq!(
        u.call(&["LOCK.ACQUIRE", "app1:orders", "tok", "100"]),
        R::ok()
    );
    assert_eq!(u.release("app1:orders", "tok"), 1);
    // Nothing written for the refused calls.
    assert_eq!(
        admin.call(&[
            "EXISTS",
            "lock:app2:orders",
            "lock-signal:app2:orders",
            "lock-signal:app2:held"
        ]),
        R::Int(0)
    );
}

/// LOCK.OWNER and LOCK.INFO reveal `lock:<name>`: they need `GET lock:<name>`, command and key
/// in one selector.
#[test]
fn a_read_needs_one_selector_allowing_get_and_the_key() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    setuser(
        &mut admin,
        &[
            "u",
            "on",
            ">pw",
            "~lock:app1:*",
            "~lock-signal:app1:*",
            "+@all",
            "-@dangerous",
            "(+set ~lock:*)",
        ],
    );
    admin.acquire("app2:x", "secret-token");
    let mut u = login(&s, "u");
    refused(u.call(&["GET", "lock:app2:x"]), "the server's own GET");
    assert_eq!(
        refused(u.call(&["LOCK.OWNER", "app2:x"]), "OWNER"),
        READ_REFUSED
    );
    assert_eq!(
        refused(u.call(&["LOCK.INFO", "app2:x"]), "INFO"),
        READ_REFUSED
    );
    assert_eq!(u.owner("app1:x"), None);
}

/// `%R~` and `%W~`: a user who may only read the lock keys may LOCK.OWNER and LOCK.INFO but not
/// take, release or renew a lock; one who may only write them may do neither (a write reads
/// the owner first); read and write granted by two different selectors is not one command's
/// right.
#[test]
fn read_only_and_write_only_key_permissions() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let all = ["+@all", "-@dangerous"];
    let rules =
        |perm: &str| ["lock:*", "lock-signal:*", "lock-fence:*"].map(|k| format!("{perm}~{k}"));
    for (user, perm) in [("r", "%R"), ("w", "%W"), ("rw", "%RW")] {
        let mut args = vec![user.to_string(), "on".into(), ">pw".into()];
        args.extend(rules(perm));
        args.extend(all.map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        setuser(&mut admin, &args);
    }
    let split = format!("({} +@all)", rules("%W").join(" "));
    let mut args = vec!["split".to_string(), "on".into(), ">pw".into()];
    args.extend(rules("%R"));
    args.extend(all.map(String::from));
    args.push(split);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    setuser(&mut admin, &args);

    assert_eq!(
        admin.call(&["LOCK.ACQUIRE", "x", "holder", "60", "FENCE"]),
        R::Int(1)
    );
    let mut r = login(&s, "r");
    assert_eq!(r.owner("x").as_deref(), Some("holder"));
    assert!(info_fields(&r.call(&["LOCK.INFO", "x"])).contains(&"fence".to_string()));
    let writes: [&[&str]; 5] = [
        &["LOCK.ACQUIRE", "y", "t", "60"],
        &["LOCK.ACQUIRE", "y", "t", "60", "FENCE"],
        &["LOCK.ACQUIRE", "x", "t", "60", "BLOCK", "10"],
        &["LOCK.RELEASE", "x", "holder"],
        &["LOCK.RENEW", "x", "holder", "600"],
    ];
    for args in writes {
        refused(r.call(args), &format!("read-only {args:?}"));
    }
    let mut w = login(&s, "w");
    refused(w.call(&["LOCK.OWNER", "x"]), "write-only OWNER");
    refused(w.call(&["LOCK.INFO", "x"]), "write-only INFO");
    for args in writes {
        refused(w.call(args), &format!("write-only {args:?}"));
    }
    let mut split = login(&s, "split");
    assert_eq!(split.owner("x").as_deref(), Some("holder"));
    for args in writes {
        refused(
            split.call(args),
            &format!("read and write in two selectors {args:?}"),
        );
    }
    assert_eq!(admin.owner("x").as_deref(), Some("holder"));
    assert_eq!(admin.call(&["EXISTS", "lock:y", "lock-fence:y"]), R::Int(0));

    let mut rw = login(&s, "rw");
    assert_eq!(
        rw.call(&["LOCK.ACQUIRE", "y", "t", "60", "FENCE"]),
        R::Int(1)
    );
    assert_eq!(rw.call(&["LOCK.RENEW", "y", "t", "600"]), R::Int(1));
    assert_eq!(rw.release("y", "t"), 1);
}

/// With FENCE the fence counter `lock-fence:<name>` is one more key of the same command; LOCK.INFO
/// shows the `fence` field only to a user who may `HGET` it, and leaves it out otherwise.
#[test]
fn fence_key_rights() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let base = [
        "on",
        ">pw",
        "~lock:*",
        "~lock-signal:*",
        "+@all",
        "-@dangerous",
    ];
    let mut with = |user: &str, extra: &[&str]| {
        let mut args = vec![user];
        args.extend_from_slice(&base);
        args.extend_from_slice(extra);
        setuser(&mut admin, &args);
    };
    // The fence key only in a selector that may not write it.
    with("sel", &["(+get +hget ~lock-fence:*)"]);
    // No fence key at all.
    with("nofence", &[]);
    // Write-only fence key.
    with("wfence", &["%W~lock-fence:*"]);
    // Everything in one selector.
    with("full", &["~lock-fence:*"]);
    let mut admin = Raw::connect(&s);
    assert_eq!(
        admin.call(&["LOCK.ACQUIRE", "z", "h", "60", "FENCE"]),
        R::Int(1)
    );

    for user in ["sel", "nofence", "wfence"] {
        let mut c = login(&s, user);
        assert_eq!(
            refused(c.call(&["LOCK.ACQUIRE", "f", "t", "60", "FENCE"]), user),
            FENCED_WRITE_REFUSED
        );
        assert_eq!(c.call(&["LOCK.ACQUIRE", "f", "t", "60"]), R::ok(), "{user}");
        assert_eq!(c.release("f", "t"), 1);
        let fields = info_fields(&c.call(&["LOCK.INFO", "z"]));
        let sees = fields.contains(&"fence".to_string());
        assert_eq!(
            sees,
            user == "sel",
            "{user} sees the fence field: {fields:?}"
        );
        assert!(fields.contains(&"owner".to_string()), "{fields:?}");
    }
    assert_eq!(admin.call(&["EXISTS", "lock-fence:f"]), R::Int(0));
    let mut full = login(&s, "full");
    assert_eq!(
        full.call(&["LOCK.ACQUIRE", "f", "t", "60", "FENCE"]),
        R::Int(1)
    );
    assert!(info_fields(&full.call(&["LOCK.INFO", "z"])).contains(&"fence".to_string()));
}

/// The yardstick for writes is LMPOP on the lock's keys (README, ACL): a user kept from it is
/// kept from LOCK.ACQUIRE too. An ACL change counts from the next command (nothing cached).
#[test]
fn writes_are_judged_as_lmpop_on_the_keys_and_acl_changes_count_at_once() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    setuser(
        &mut admin,
        &[
            "u",
            "on",
            ">pw",
            "~lock:*",
            "~lock-signal:*",
            "+@all",
            "-@dangerous",
        ],
    );
    let mut u = login(&s, "u");
    assert_eq!(u.call(&["LOCK.ACQUIRE", "a", "t", "60"]), R::ok());
    setuser(&mut admin, &["u", "-lmpop"]);
    assert_eq!(
        refused(u.call(&["LOCK.RENEW", "a", "t", "60"]), "-lmpop"),
        WRITE_REFUSED
    );
    assert_eq!(u.owner("a").as_deref(), Some("t"), "reads need GET only");
    setuser(&mut admin, &["u", "+lmpop", "resetkeys", "~lock:*"]);
    refused(u.call(&["LOCK.RELEASE", "a", "t"]), "no signal key");
    setuser(&mut admin, &["u", "~lock-signal:*"]);
    assert_eq!(u.release("a", "t"), 1);
}

/// The operator's example (README, ACL), and a user without the signal keys.
fn as_user(s: &Server, user: &str) -> redis::Connection {
    let mut c = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg("pw")
        .query(&mut c)
        .unwrap();
    c
}

fn err_text(r: redis::RedisResult<Value>) -> String {
    format!("{}", r.expect_err("must be refused"))
}

#[test]
fn acl_is_checked_on_the_lock_keys_not_the_name() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "app1",
            "on",
            ">pw",
            "~lock:app1:*",
            "~lock-signal:app1:*",
            "+@all",
            "-@dangerous",
        ])
        .query(&mut admin)
        .unwrap();
    // A user who may write lock:app1:* but not the signal keys.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "half",
            "on",
            ">pw",
            "~lock:app1:*",
            "+@all",
            "-@dangerous",
        ])
        .query(&mut admin)
        .unwrap();
    let mut c = as_user(&s, "app1");
    let ok: String = acquire("app1:x", "t", 60, None).query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(owner(&mut c, "app1:x").as_deref(), Some("t"));
    assert_eq!(
        release(&mut c, "app1:x", "t"),
        1,
        "may write lock-signal:app1:x too"
    );

    for cmd in [
        acquire("app2:x", "t", 60, None),
        acquire("app2:x", "t", 60, Some(100)),
        redis::cmd("LOCK.RELEASE").arg("app2:x").arg("t").clone(),
        redis::cmd("LOCK.RENEW")
            .arg("app2:x")
            .arg("t")
            .arg(5)
            .clone(),
        redis::cmd("LOCK.OWNER").arg("app2:x").clone(),
    ] {
        let text = err_text(cmd.query(&mut c));
        assert!(text.to_lowercase().contains("noperm"), "{text}");
    }
    let mut h = as_user(&s, "half");
    let text = err_text(acquire("app1:y", "t", 60, None).query(&mut h));
    assert!(text.to_lowercase().contains("noperm"), "{text}");

    // RESETALL needs FLUSHDB's rights. On 7.0 the module refuses it (its NOPERM names FLUSHDB);
    // where the command has ACL categories (7.2+, Valkey) the server refuses a `-@dangerous`
    // user itself, with its own NOPERM text, before the module runs. Either way: NOPERM, and the
    // held lock stays.
    let _: String = acquire("app1:keep", "k", 60, None).query(&mut c).unwrap();
    let err = redis::cmd("LOCK.RESETALL")
        .query::<Value>(&mut c)
        .expect_err("RESETALL needs FLUSHDB's rights");
    assert_eq!(
        err.code(),
        Some("NOPERM"),
        "RESETALL refused with NOPERM: {err}"
    );
    assert_eq!(
        owner(&mut admin, "app1:keep").as_deref(),
        Some("k"),
        "a refused RESETALL removes nothing"
    );

    // Nothing written for refused calls: only the held lock and app1:x's signal list (which
    // expires 1 s after its release) may exist.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut admin).unwrap();
    assert!(
        keys.iter()
            .all(|k| k == "lock:app1:keep" || k == "lock-signal:app1:x"),
        "nothing written for refused calls: {keys:?}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("lock:app2:x")
        .arg("lock:app1:y")
        .query(&mut admin)
        .unwrap();
    assert_eq!(exists, 0);
}
