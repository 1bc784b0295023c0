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
    assert_eq!(fw, last + 1);
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
    assert_eq!(pair[1], R::Int(f2 + 1));
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
    assert_eq!(
        fence(c2.call(&["LOCK.ACQUIRE", "a", "u", "60", "FENCE"])),
        f + 1
    );
    assert!(
        !aof.to_uppercase().contains("LOCK.ACQUIRE"),
        "no module command: {aof}"
    );
    assert_eq!(f, 1);
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
