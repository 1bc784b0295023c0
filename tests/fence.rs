//! `LOCK.ACQUIRE ... FENCE`: every successful acquire is given a fence, an integer above every
//! fence issued before for that name, kept in `lock-fence:<name>` (a replicated hash), so that a
//! resource can refuse the writes of a holder that lost its lease without knowing it.

mod common;
use common::raw::*;
use common::*;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn fence(r: R) -> i64 {
    match r {
        R::Int(n) => n,
        other => panic!("wanted a fence, got {other:?}"),
    }
}

#[test]
fn fences_only_grow_whatever_happens_to_the_lock() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let mut last = 0;
    let next = |c: &mut Raw, token: &str, last: &mut i64| {
        let f = fence(c.call(&["LOCK.ACQUIRE", "f", token, "60", "FENCE"]));
        assert!(f > *last, "{f} after {last}");
        *last = f;
        f
    };
    // A release, then an expiry, then a python-redis-lock holder in between.
    let a = next(&mut c, "a", &mut last);
    assert_eq!(c.release("f", "a"), 1);
    let b = next(&mut c, "b", &mut last);
    assert!(b > a);
    assert_eq!(c.call(&["PEXPIRE", "lock:f", "1"]), R::Int(1));
    while c.call(&["EXISTS", "lock:f"]) != R::Int(0) {
        thread::sleep(Duration::from_millis(1));
    }
    next(&mut c, "c", &mut last);
    assert_eq!(c.call(&["DEL", "lock:f"]), R::Int(1));
    assert_eq!(c.call(&["SET", "lock:f", "py", "NX", "EX", "60"]), R::ok());
    assert_eq!(c.call(&["DEL", "lock:f"]), R::Int(1));
    // A hand-over to a waiter that asked for a fence: it gets the next one.
    next(&mut c, "d", &mut last);
    let mut w = Raw::connect(&s);
    w.send(&[&["LOCK.ACQUIRE", "f", "w", "60", "BLOCK", "0", "FENCE"]]);
    s.wait_blocked(1);
    assert_eq!(c.release("f", "d"), 1);
    let fw = fence(w.read("the waiter's fence"));
    assert!(fw > last, "{fw} after {last}");
    last = fw;
    assert_eq!(c.release("f", "w"), 1);
    // DEBUG RELOAD keeps the counter; LOCK.RESETALL never lowers it.
    assert_eq!(c.call(&["DEBUG", "RELOAD"]), R::ok());
    assert_eq!(c.call(&["LOCK.RESETALL"]), R::Int(0));
    next(&mut c, "e", &mut last);
    // The counter is a plain hash: the last fence and its token.
    assert_eq!(
        c.call(&["HGET", "lock-fence:f", "fence"]),
        R::Bulk(Some(last.to_string().into_bytes()))
    );
    assert_eq!(
        c.call(&["HGET", "lock-fence:f", "token"]),
        R::Bulk(Some(b"e".to_vec()))
    );
}

#[test]
fn a_retry_by_the_holder_gets_its_own_fence_and_a_fenceless_holder_a_fresh_one() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let f1 = fence(c.call(&["LOCK.ACQUIRE", "r", "t", "60", "FENCE"]));
    assert_eq!(
        fence(c.call(&["LOCK.ACQUIRE", "r", "t", "60", "FENCE"])),
        f1
    );
    assert_eq!(c.release("r", "t"), 1);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "r", "u", "60"]), R::ok());
    let f2 = fence(c.call(&["LOCK.ACQUIRE", "r", "u", "60", "FENCE"]));
    assert!(f2 > f1);
    // Held by another: nil, and no fence is spent.
    assert_eq!(c.call(&["LOCK.ACQUIRE", "r", "v", "60", "FENCE"]), R::nil());
    assert_eq!(
        c.call(&["HGET", "lock-fence:r", "fence"]),
        R::Bulk(Some(f2.to_string().into_bytes()))
    );
    // With `*`: [token, fence].
    assert_eq!(c.release("r", "u"), 1);
    let R::Array(Some(pair)) = c.call(&["LOCK.ACQUIRE", "r", "*", "60", "FENCE"]) else {
        panic!("[token, fence]")
    };
    assert_eq!(pair.len(), 2);
    assert!(pair[1].int() > f2);
    // A fence key that is not one: an error, nothing changes.
    c.call(&["SET", "lock-fence:bad", "x"]);
    let r = c.call(&["LOCK.ACQUIRE", "bad", "t", "60", "FENCE"]);
    assert!(
        matches!(&r, R::Error(e) if e.starts_with("WRONGTYPE")),
        "{r:?}"
    );
    assert_eq!(c.call(&["EXISTS", "lock:bad"]), R::Int(0));
}

#[test]
fn fences_reach_the_aof_as_plain_hset_and_survive_a_restart() {
    let s = Server::with(aof_options(None));
    let mut c = Raw::connect(&s);
    let f = fence(c.call(&["LOCK.ACQUIRE", "a", "t", "60", "FENCE"]));
    let mut aof = String::new();
    let start = Instant::now();
    while !aof.to_uppercase().contains("HSET") {
        assert!(start.elapsed() < DEADLINE, "no HSET in the AOF: {aof}");
        aof.clear();
        for entry in std::fs::read_dir(s.dir.join("appendonlydir")).unwrap() {
            let path = entry.unwrap().path();
            aof.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert!(aof.contains("lock-fence:a"), "{aof}");
    // A restart from the AOF goes on above it (appendfsync always in these tests).
    let mut s = s;
    s.kill();
    let s2 = Server::with(aof_options(Some(s.dir.clone())));
    let mut c2 = Raw::connect(&s2);
    assert_eq!(c2.call(&["DEL", "lock:a"]), R::Int(1));
    assert!(fence(c2.call(&["LOCK.ACQUIRE", "a", "u", "60", "FENCE"])) > f);
    assert!(
        !aof.to_uppercase().contains("LOCK.ACQUIRE"),
        "no module command: {aof}"
    );
}

/// A storage that keeps the highest fence it has seen refuses the write of a holder that was
/// stopped past its lease (SIGSTOP) while the next holder wrote.
#[test]
fn a_stale_holder_is_refused_by_a_fenced_storage() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let sock = s.unix_socket().expect("unix socket");
    // The storage: accepts a write only with a fence at least the highest seen.
    let storage = "local hi = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0') \
                   if tonumber(ARGV[1]) < hi then return 0 end \
                   redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'value', ARGV[2]) return 1";
    // Holder A: a process that takes the lock with a fence (lease 1 s), then, once resumed,
    // writes to the storage with it.
    let script = format!(
        "F=$(redis-cli -s {sock} LOCK.ACQUIRE res a 1 FENCE); \
         redis-cli -s {sock} SET a:fence \"$F\" > /dev/null; \
         kill -STOP $$; \
         redis-cli -s {sock} EVAL \"{storage}\" 1 storage \"$F\" from-a > /dev/null",
        sock = sock.display()
    );
    let mut a = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let start = Instant::now();
    while c.call(&["EXISTS", "a:fence"]) != R::Int(1) {
        assert!(start.elapsed() < DEADLINE, "holder A never got its fence");
        thread::sleep(Duration::from_millis(5));
    }
    let fa: i64 = c.call(&["GET", "a:fence"]).text().unwrap().parse().unwrap();
    // A's lease runs out while it is stopped; B takes the lock and writes.
    let mut b = Raw::connect(&s);
    let fb = fence(b.call(&["LOCK.ACQUIRE", "res", "b", "60", "BLOCK", "5000", "FENCE"]));
    assert!(fb > fa);
    assert_eq!(
        b.call(&["EVAL", storage, "1", "storage", &fb.to_string(), "from-b"]),
        R::Int(1)
    );
    // A resumes and writes with its stale fence: refused.
    unsafe { libc::kill(a.id() as i32, libc::SIGCONT) };
    let status = a.wait().unwrap();
    assert!(status.success() || status.code().is_some());
    assert_eq!(
        c.call(&["HGET", "storage", "value"]),
        R::Bulk(Some(b"from-b".to_vec()))
    );
}

/// FENCE waiters that cannot be given a fence (`lock-fence:<name>` made a string while they
/// wait) are refused one group after another when the lock is let go: a loop, whatever their
/// number. As a recursion (one frame per waiter) 2,000 of them overflowed a 256 KB stack and
/// the server died (SIGSEGV); about 24,000 did on the default 8 MB.
#[test]
fn thousands_of_waiters_refused_a_fence_do_not_overflow_the_stack() {
    const WAITERS: usize = 2_000;
    let s = Server::with(Options {
        stack_kb: Some(256),
        ..Options::default()
    });
    let mut c = Raw::connect(&s);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "deep", "holder", "60"]), R::ok());
    let mut waiters: Vec<Raw> = (0..WAITERS)
        .map(|i| {
            let mut w = Raw::connect(&s);
            let token = format!("w{i}");
            w.send(&[&["LOCK.ACQUIRE", "deep", &token, "60", "BLOCK", "0", "FENCE"]]);
            w
        })
        .collect();
    s.wait_blocked(WAITERS as i64);
    assert_eq!(c.call(&["SET", "lock-fence:deep", "not a hash"]), R::ok());
    assert_eq!(c.release("deep", "holder"), 1);
    for w in &mut waiters {
        match w.read("a refused waiter") {
            R::Error(e) => assert!(e.contains("fence"), "{e}"),
            other => panic!("wanted the fence error, got {other:?}"),
        }
    }
    // The server lives, and nobody holds the lock.
    assert_eq!(c.call(&["PING"]), R::Status("PONG".into()));
    assert_eq!(c.owner("deep"), None);
    s.wait_blocked(0);
}

/// `INFO rlock`'s `fences_issued`.
fn issued(c: &mut Raw) -> i64 {
    let R::Bulk(Some(info)) = c.call(&["INFO", "rlock"]) else {
        panic!("INFO rlock")
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("rlock_fences_issued:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rlock_fences_issued")
}

/// Wait until `lock:<name>` is gone (an expiry, a take-back).
fn wait_free(c: &mut Raw, name: &str) {
    let start = Instant::now();
    while c.owner(name).is_some() {
        assert!(start.elapsed() < DEADLINE, "lock:{name} never went away");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Only a retry by the holder, while it holds the lock throughout, gets its fence again. Every
/// new acquisition by the same token gets a new one: after a release, an expiry, a holder in
/// between (python-redis-lock, a fenceless acquire, a SET), a hand-over to a waiter with that
/// token, a BIND take-back, a reset, a MOVE, an overwrite. (Each case repeated the fence before:
/// the counter remembered only the token it went to, not the acquisition.)
#[test]
fn a_new_acquisition_by_the_same_token_gets_a_new_fence() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let take = |c: &mut Raw, n: &str| fence(c.call(&["LOCK.ACQUIRE", n, "A", "60", "FENCE"]));
    let f1 = take(&mut c, "n");
    let n1 = issued(&mut c);
    // Retries and renewals of the same acquisition: the same fence, none spent.
    assert_eq!(take(&mut c, "n"), f1);
    assert_eq!(c.call(&["LOCK.ACQUIRE", "n", "A", "60"]), R::ok());
    assert_eq!(c.call(&["LOCK.RENEW", "n", "A", "60"]), R::Int(1));
    assert_eq!(c.call(&["EXPIRE", "lock:n", "90"]), R::Int(1)); // python-redis-lock's extend
    assert_eq!(take(&mut c, "n"), f1);
    assert_eq!(issued(&mut c), n1);

    // Each case on its own lock, held by A with a fence; the fences it gives out after must
    // each be above the one before.
    type Case<'a> = (&'a str, &'a dyn Fn(&mut Raw, &str) -> Vec<i64>);
    let cases: [Case; 10] = [
        ("release", &|c, n| {
            assert_eq!(c.release(n, "A"), 1);
            vec![take(c, n)]
        }),
        ("fenceless acquisition by A in between", &|c, n| {
            assert_eq!(c.release(n, "A"), 1);
            assert_eq!(c.call(&["LOCK.ACQUIRE", n, "A", "60"]), R::ok());
            vec![take(c, n)]
        }),
        ("expiry", &|c, n| {
            assert_eq!(c.call(&["PEXPIRE", &format!("lock:{n}"), "1"]), R::Int(1));
            wait_free(c, n);
            vec![take(c, n)]
        }),
        ("python-redis-lock reset and holder in between", &|c, n| {
            let key = format!("lock:{n}");
            assert_eq!(c.call(&["DEL", &key]), R::Int(1));
            assert_eq!(c.call(&["SET", &key, "py", "NX", "EX", "60"]), R::ok());
            assert_eq!(c.call(&["DEL", &key]), R::Int(1));
            vec![take(c, n)]
        }),
        ("SET by another, then back to A", &|c, n| {
            let key = format!("lock:{n}");
            assert_eq!(c.call(&["SET", &key, "B"]), R::ok());
            assert_eq!(c.call(&["SET", &key, "A"]), R::ok());
            vec![take(c, n)]
        }),
        ("SETEX, PSETEX, GETSET, MSET back to A", &|c, n| {
            let key = format!("lock:{n}");
            let mut fences = Vec::new();
            for write in [
                vec!["SETEX", &key, "60", "A"],
                vec!["PSETEX", &key, "60000", "A"],
                vec!["GETSET", &key, "A"],
                vec!["MSET", "other", "x", &key, "A"],
            ] {
                assert!(!matches!(c.call(&write), R::Error(_)), "{write:?}");
                fences.push(take(c, n));
            }
            fences
        }),
        ("LOCK.RESETALL", &|c, n| {
            assert!(c.call(&["LOCK.RESETALL"]).int() >= 1);
            vec![take(c, n)]
        }),
        ("hand-over to a waiter with A's token", &|c, n| {
            assert_eq!(c.release(n, "A"), 1);
            assert_eq!(c.call(&["LOCK.ACQUIRE", n, "B", "60"]), R::ok());
            let mut w = Raw::connect(&s);
            w.send(&[&["LOCK.ACQUIRE", n, "A", "60", "BLOCK", "0", "FENCE"]]);
            s.wait_blocked(1);
            assert_eq!(c.release(n, "B"), 1);
            let f = fence(w.read("the waiter's fence"));
            // ... and that waiter's own retry is its fence.
            assert_eq!(take(c, n), f);
            vec![f]
        }),
        ("BIND take-back", &|c, n| {
            assert_eq!(c.release(n, "A"), 1);
            let mut b = Raw::connect(&s);
            let fb = fence(b.call(&["LOCK.ACQUIRE", n, "A", "60", "FENCE", "BIND"]));
            drop(b);
            wait_free(c, n);
            vec![fb, take(c, n)]
        }),
        ("a lock moved away and back", &|c, n| {
            let key = format!("lock:{n}");
            assert_eq!(c.call(&["MOVE", &key, "1"]), R::Int(1));
            assert_eq!(c.call(&["SELECT", "1"]), R::ok());
            assert_eq!(c.call(&["MOVE", &key, "0"]), R::Int(1));
            assert_eq!(c.call(&["SELECT", "0"]), R::ok());
            vec![take(c, n)]
        }),
    ];
    let mut repeated = Vec::new();
    for (i, (case, run)) in cases.iter().enumerate() {
        let name = format!("case{i}");
        let mut fences = vec![take(&mut c, &name)];
        fences.extend(run(&mut c, &name));
        if fences.windows(2).any(|w| w[1] <= w[0]) {
            repeated.push(format!("{case}: {fences:?}"));
        }
    }
    assert!(repeated.is_empty(), "fences not above: {repeated:#?}");
}

/// The counter can be lost (an operator's DEL, eviction, FLUSHALL): fences go on from the
/// server's clock, still above every fence issued before.
#[test]
fn fences_grow_when_the_counter_is_lost() {
    let s = Server::start();
    let mut c = Raw::connect(&s);
    let f1 = fence(c.call(&["LOCK.ACQUIRE", "l", "A", "60", "FENCE"]));
    // DEL by an operator, while A holds the lock: A's retry cannot be told its fence
    // (it is gone); it gets a new one, above.
    assert_eq!(c.call(&["DEL", "lock-fence:l"]), R::Int(1));
    let f2 = fence(c.call(&["LOCK.ACQUIRE", "l", "A", "60", "FENCE"]));
    assert!(f2 > f1, "{f2} after {f1}");
    // Released, the counter deleted, another token.
    assert_eq!(c.release("l", "A"), 1);
    assert_eq!(c.call(&["DEL", "lock-fence:l"]), R::Int(1));
    let f3 = fence(c.call(&["LOCK.ACQUIRE", "l", "B", "60", "FENCE"]));
    assert!(f3 > f2, "{f3} after {f2}");

    // Eviction (allkeys-lru): memory limited below what the server uses evicts every key.
    assert_eq!(
        c.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        R::ok()
    );
    assert_eq!(c.call(&["CONFIG", "SET", "maxmemory", "1"]), R::ok());
    let start = Instant::now();
    while c.call(&["EXISTS", "lock-fence:l"]) != R::Int(0) {
        assert!(start.elapsed() < DEADLINE, "lock-fence:l never evicted");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.call(&["CONFIG", "SET", "maxmemory", "0"]), R::ok());
    let R::Bulk(Some(stats)) = c.call(&["INFO", "stats"]) else {
        panic!("INFO stats")
    };
    assert!(
        !String::from_utf8_lossy(&stats).contains("evicted_keys:0\r"),
        "nothing was evicted"
    );
    let f4 = fence(c.call(&["LOCK.ACQUIRE", "l", "B", "60", "FENCE"]));
    assert!(f4 > f3, "{f4} after {f3}");

    // FLUSHALL.
    assert_eq!(c.call(&["FLUSHALL"]), R::ok());
    let f5 = fence(c.call(&["LOCK.ACQUIRE", "l", "B", "60", "FENCE"]));
    assert!(f5 > f4, "{f5} after {f4}");
    // Kept as it always was: the hash holds the last fence and its token.
    assert_eq!(
        c.call(&["HGET", "lock-fence:l", "fence"]),
        R::Bulk(Some(f5.to_string().into_bytes()))
    );
    let info = c.call(&["LOCK.INFO", "l"]);
    let R::Array(Some(fields)) = info else {
        panic!("LOCK.INFO")
    };
    assert_eq!(fields.last(), Some(&R::Int(f5)));
}

/// A restart from an RDB saved before the last fences: the counter goes back, fences do not.
#[test]
fn fences_grow_across_a_restart_from_an_older_rdb() {
    let mut s = Server::start();
    let mut c = Raw::connect(&s);
    let f1 = fence(c.call(&["LOCK.ACQUIRE", "r", "A", "60", "FENCE"]));
    assert_eq!(c.call(&["SAVE"]), R::ok());
    assert_eq!(c.release("r", "A"), 1);
    let f2 = fence(c.call(&["LOCK.ACQUIRE", "r", "B", "60", "FENCE"]));
    assert_eq!(c.release("r", "B"), 1);
    let f3 = fence(c.call(&["LOCK.ACQUIRE", "r", "C", "60", "FENCE"]));
    assert!(f1 < f2 && f2 < f3);
    s.kill();
    let s2 = Server::with(Options {
        dir: Some(s.dir.clone()),
        ..Options::default()
    });
    let mut c2 = Raw::connect(&s2);
    // The RDB's: A holds the lock with fence f1.
    assert_eq!(
        c2.call(&["HGET", "lock-fence:r", "fence"]),
        R::Bulk(Some(f1.to_string().into_bytes()))
    );
    assert_eq!(c2.owner("r").as_deref(), Some("A"));
    // A's "retry" after the restart is not known to be the same acquisition: a new fence.
    let fa = fence(c2.call(&["LOCK.ACQUIRE", "r", "A", "60", "FENCE"]));
    assert!(fa > f3, "{fa} after {f3}");
    assert_eq!(c2.release("r", "A"), 1);
    let fd = fence(c2.call(&["LOCK.ACQUIRE", "r", "D", "60", "FENCE"]));
    assert!(fd > fa, "{fd} after {fa}");
}

/// A failover to a replica that missed the primary's last fences: the promoted replica's
/// fences are above every fence the old primary issued (their clocks agree).
#[test]
fn a_promoted_replica_that_missed_the_last_fences_goes_on_above_them() {
    let mut primary = Server::with(Options {
        tcp: true,
        ..Options::default()
    });
    let replica = replica_of(&primary, true);
    let mut p = Raw::connect(&primary);
    let mut r = Raw::connect(&replica);
    let f1 = fence(p.call(&["LOCK.ACQUIRE", "fo", "A", "60", "FENCE"]));
    // WAIT on the connection that wrote (a fresh one has nothing to wait for).
    assert_eq!(p.call(&["WAIT", "1", "10000"]), R::Int(1));
    assert_eq!(
        r.call(&["HGET", "lock-fence:fo", "fence"]),
        R::Bulk(Some(f1.to_string().into_bytes()))
    );
    // The replica stops hearing from the primary (its link breaks) ...
    assert_eq!(r.call(&["REPLICAOF", "NO", "ONE"]), R::ok());
    // ... while the primary issues more fences, and dies.
    assert_eq!(p.release("fo", "A"), 1);
    let f2 = fence(p.call(&["LOCK.ACQUIRE", "fo", "B", "60", "FENCE"]));
    assert_eq!(p.release("fo", "B"), 1);
    let f3 = fence(p.call(&["LOCK.ACQUIRE", "fo", "C", "60", "FENCE"]));
    assert!(f1 < f2 && f2 < f3);
    primary.kill();
    // The promoted replica missed f2 and f3: its counter and lock are the old ones.
    assert_eq!(
        r.call(&["HGET", "lock-fence:fo", "fence"]),
        R::Bulk(Some(f1.to_string().into_bytes()))
    );
    assert_eq!(r.owner("fo").as_deref(), Some("A"));
    // A's retry there, and the next holder's fence, are above every fence issued.
    let fa = fence(r.call(&["LOCK.ACQUIRE", "fo", "A", "60", "FENCE"]));
    assert!(fa > f3, "{fa} after {f3}");
    assert_eq!(r.release("fo", "A"), 1);
    let fd = fence(r.call(&["LOCK.ACQUIRE", "fo", "D", "60", "FENCE"]));
    assert!(fd > fa, "{fd} after {fa}");
}
