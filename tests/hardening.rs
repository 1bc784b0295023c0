//! Regression tests for two ways the module can take the server down: time arithmetic that overflows
//! (a module timer armed with a huge period wraps in Redis's signed 64-bit µs arithmetic and
//! the server loops forever, or the module's schedule wraps and no timeout or lease end is ever
//! acted on again), and writes while clients are paused (`CLIENT PAUSE WRITE`/`ALL`,
//! `FAILOVER`: Redis stops expiring keys, and a module write to a key past its time aborts the
//! server).
//!
//! Every connection here has a read timeout, so a hung server fails the test instead of hanging
//! it; every wait is for a reply or for `blocked_clients`, with a deadline.

mod common;
use common::*;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The largest `ttl` LOCK.ACQUIRE and LOCK.RENEW accept, in seconds.
const MAX_TTL_SECS: u64 = 2_305_843_009_213_693;
/// The largest `BLOCK` LOCK.ACQUIRE accepts, in milliseconds.
const MAX_BLOCK_MS: u64 = 2_305_843_009_213_693_951;

/// How far this process's monotonic clock and Redis's cached `mstime` may disagree about when
/// a pause ended.
const SLACK: Duration = Duration::from_millis(50);

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// What the server's log says went wrong, for failure messages: its assertion or crash lines,
/// else its last lines.
fn trouble(s: &Server) -> String {
    let log = s.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ASSERTION") || l.contains("==> ") || l.contains("crashed"))
        .take(5)
        .collect();
    let lines: Vec<&str> = if bad.is_empty() {
        let all: Vec<&str> = log.lines().filter(|l| !l.contains("WARNING")).collect();
        all[all.len().saturating_sub(5)..].to_vec()
    } else {
        bad
    };
    format!("server log:\n  {}", lines.join("\n  "))
}

/// A failed command, in words.
fn why(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        format!("no reply within {DEADLINE:?}: the server hangs or never answers ({e})")
    } else if e.is_connection_dropped() || e.is_io_error() {
        format!("connection lost: the server died? ({e})")
    } else {
        format!("error reply: {e}")
    }
}

/// A connection whose every read and write gives up after `DEADLINE`.
fn timed_conn(s: &Server) -> redis::Connection {
    let c = redis::Client::open(s.url.as_str())
        .unwrap()
        .get_connection_with_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("cannot connect: {e}\n{}", trouble(s)));
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.set_write_timeout(Some(DEADLINE)).unwrap();
    c
}

/// A test's own connection to a server: a failed or timed-out command fails the test with what
/// the server logged.
struct Client<'a> {
    s: &'a Server,
    c: redis::Connection,
}

impl<'a> Client<'a> {
    fn new(s: &'a Server) -> Self {
        Client {
            s,
            c: timed_conn(s),
        }
    }

    fn q<R: redis::FromRedisValue>(&mut self, what: &str, cmd: &redis::Cmd) -> R {
        cmd.query(&mut self.c)
            .unwrap_or_else(|e| panic!("{what}: {}\n{}", why(&e), trouble(self.s)))
    }

    fn run<R: redis::FromRedisValue>(&mut self, args: &[&str]) -> R {
        self.q(&args.join(" "), &cmd(args))
    }

    fn ping(&mut self, when: &str) {
        let r: String = self.q(&format!("PING {when}"), &cmd(&["PING"]));
        assert_eq!(r, "PONG", "{when}");
    }

    fn info(&mut self, section: &str, field: &str) -> String {
        let info: String = self.run(&["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
            .trim()
            .to_string()
    }

    fn blocked(&mut self) -> i64 {
        self.info("clients", "blocked_clients").parse().unwrap()
    }

    fn wait_blocked(&mut self, n: i64) {
        let start = Instant::now();
        loop {
            let got = self.blocked();
            if got == n {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "blocked_clients stayed {got}, wanted {n}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn owner(&mut self, name: &str) -> Option<String> {
        self.run(&["LOCK.OWNER", name])
    }

    fn acquire(&mut self, name: &str, token: &str, ttl: u64) {
        let r: Option<String> = self.q("LOCK.ACQUIRE", &acquire(name, token, ttl, None));
        assert_eq!(r.as_deref(), Some("OK"), "{token} takes {name}");
    }

    fn release(&mut self, name: &str, token: &str) -> i64 {
        self.run(&["LOCK.RELEASE", name, token])
    }

    fn repl_offset(&mut self) -> i64 {
        self.info("replication", "master_repl_offset")
            .parse()
            .unwrap()
    }

    /// `cmd` sent on a connection of its own (opened now, so before any pause); once this
    /// returns the server counts one more blocked client.
    fn blocked_call(&mut self, cmd: redis::Cmd) -> Call {
        let before = self.blocked();
        let call = Call::spawn(self.s, cmd);
        self.wait_blocked(before + 1);
        call
    }
}

/// A blocking LOCK.ACQUIRE running in a thread: its reply and when it arrived.
struct Call {
    rx: mpsc::Receiver<(redis::RedisResult<Option<String>>, Instant)>,
}

impl Call {
    fn spawn(s: &Server, cmd: redis::Cmd) -> Call {
        let mut c = timed_conn(s);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let r = cmd.query(&mut c);
            let _ = tx.send((r, Instant::now()));
        });
        Call { rx }
    }

    /// The reply, which must come before the deadline; and when it came.
    fn wait(self, s: &Server, what: &str) -> (Option<String>, Instant) {
        let (r, at) = self
            .rx
            .recv_timeout(DEADLINE + Duration::from_secs(1))
            .unwrap_or_else(|_| panic!("{what}: no reply before the deadline\n{}", trouble(s)));
        match r {
            Ok(v) => (v, at),
            Err(e) => panic!("{what}: {}\n{}", why(&e), trouble(s)),
        }
    }

    fn ok(self, s: &Server, what: &str) -> Instant {
        let (r, at) = self.wait(s, what);
        assert_eq!(r.as_deref(), Some("OK"), "{what}");
        at
    }
}

fn block_for(name: &str, token: &str, ttl: u64, ms: u64) -> redis::Cmd {
    acquire(name, token, ttl, Some(ms))
}

/// For up to `how_long` (keep it short: this asserts that something does NOT happen), check
/// `still` over and over.
fn for_a_while(how_long: Duration, mut still: impl FnMut()) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        still();
        thread::sleep(Duration::from_millis(10));
    }
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name's ')': state is the 1st, utime the 12th, stime the 13th.
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// An idle server (a waiter waiting, nothing else to do) must not burn a CPU: a timer that
/// fires at once and re-arms itself forever does. Watched for 300 ms; it may use a third.
fn assert_idle(s: &Server, when: &str) {
    let (before, start) = (cpu_time(s.pid()), Instant::now());
    thread::sleep(Duration::from_millis(300));
    let used = cpu_time(s.pid()) - before;
    assert!(
        used * 3 < start.elapsed(),
        "the server spins {when}: {used:?} of CPU in {:?}",
        start.elapsed()
    );
}

// ---- A. time arithmetic ----

#[test]
fn a_waiter_behind_the_longest_lease_does_not_hang_the_server() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", MAX_TTL_SECS);
    let w = t.blocked_call(block_for("x", "w", 1, 0));
    t.ping("with a waiter queued behind the longest lease");
    assert_eq!(t.release("x", "holder"), 1);
    w.ok(&s, "the waiter, once the holder releases");
    assert_eq!(t.owner("x").as_deref(), Some("w"));
    t.ping("after the hand-over");
}

/// A lock without a lease: only the waiter's own BLOCK time is ever scheduled. The longest
/// BLOCK ends 2^61 ms from now, which in µs is exactly 0 modulo 2^64: a timer armed for it may
/// fire at once, again and again (the server spins). A second less wraps to a moment just past
/// and hangs the server for good.
#[test]
fn the_longest_blocks_do_not_hang_the_server() {
    let s = Server::start();
    let mut t = Client::new(&s);
    for block in [MAX_BLOCK_MS, MAX_BLOCK_MS - 1000] {
        let _: String = t.run(&["SET", "lock:x", "v"]);
        let w = t.blocked_call(block_for("x", "w", 10, block));
        t.ping(&format!("with a waiter blocked for {block} ms"));
        assert_idle(&s, &format!("with a waiter blocked for {block} ms"));
        let n: i64 = t.run(&["DEL", "lock:x"]);
        assert_eq!(n, 1);
        w.ok(
            &s,
            &format!("the waiter with BLOCK {block}, once lock:x is deleted"),
        );
        assert_eq!(t.owner("x").as_deref(), Some("w"));
        assert_eq!(t.release("x", "w"), 1);
    }
}

#[test]
fn a_python_holder_with_a_huge_expire_does_not_hang_the_server() {
    let s = Server::start();
    let mut t = Client::new(&s);
    // python-redis-lock's acquire: SET lock:x id NX EX expire. Redis refuses an EX whose end
    // overflows: the largest it accepts ends a minute short of i64::MAX ms. The second ends
    // ~584,000 years from now, where the lease's end in µs wraps 2^64 to just before now.
    let (secs, _): (String, String) = t.run(&["TIME"]);
    let now_ms: i64 = secs.parse::<i64>().unwrap() * 1000;
    let largest = (i64::MAX - now_ms) / 1000 - 60;
    for ex in [largest, 18_446_744_073_709 - 1000] {
        let r: Option<String> = t.run(&["SET", "lock:x", "v", "NX", "EX", &ex.to_string()]);
        assert_eq!(r.as_deref(), Some("OK"), "SET ... EX {ex}");
        let w = t.blocked_call(block_for("x", "w", 10, 0));
        t.ping(&format!(
            "with a waiter queued behind a python holder with EX {ex}"
        ));
        let n: i64 = t.run(&["DEL", "lock:x"]);
        assert_eq!(n, 1);
        w.ok(
            &s,
            &format!("the waiter behind EX {ex}, once lock:x is deleted"),
        );
        assert_eq!(t.owner("x").as_deref(), Some("w"));
        assert_eq!(t.release("x", "w"), 1);
    }
}

/// The holder of a lease about to end renews it to the longest: when the old end comes, the
/// module looks at the lock again and finds the new, far end.
#[test]
fn renewing_to_the_longest_lease_with_a_waiter_does_not_hang_the_server() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", 60);
    let old_end = Instant::now() + Duration::from_millis(500);
    let n: i64 = t.run(&["PEXPIRE", "lock:x", "500"]);
    assert_eq!(n, 1);
    let w = t.blocked_call(block_for("x", "w", 10, 0));
    let r: i64 = t.run(&["LOCK.RENEW", "x", "holder", &MAX_TTL_SECS.to_string()]);
    assert_eq!(r, 1, "renewed before the old lease ended");
    // The module's look at the old lease end is not observable: keep asking until it is past.
    while Instant::now() < old_end + Duration::from_millis(150) {
        t.ping("around the old lease's end");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(t.owner("x").as_deref(), Some("holder"));
    assert_eq!(t.blocked(), 1);
    assert_eq!(t.release("x", "holder"), 1);
    w.ok(&s, "the waiter, once the holder releases");
    assert_eq!(t.owner("x").as_deref(), Some("w"));
}

/// A lease ending at the very last millisecond Redis can represent must not break the schedule
/// of every other lock: timeouts and lease ends elsewhere still happen on time.
#[test]
fn a_lease_ending_at_the_end_of_time_leaves_other_locks_timeouts_and_lease_ends_working() {
    let s = Server::start();
    let mut t = Client::new(&s);
    let r: String = t.run(&["SET", "lock:A", "v", "PXAT", &i64::MAX.to_string()]);
    assert_eq!(r, "OK");
    let wa = t.blocked_call(block_for("A", "wa", 10, 0));
    t.ping("with a waiter behind a lease ending at i64::MAX");

    // A BLOCK timeout on another lock.
    t.acquire("B", "holder", 60);
    let started = Instant::now();
    let wb = t.blocked_call(block_for("B", "wb", 10, 200));
    let (r, at) = wb.wait(&s, "B's waiter, BLOCK 200");
    assert_eq!(r, None, "B's waiter times out");
    assert!(at - started >= Duration::from_millis(200));
    assert_eq!(t.owner("B").as_deref(), Some("holder"));
    t.ping("after B's timeout");

    // A lease end on a third lock: the waiter gets it when the holder's second runs out.
    t.acquire("C", "holder", 1);
    let wc = t.blocked_call(block_for("C", "wc", 10, 0));
    wc.ok(&s, "C's waiter, at the end of C's 1 s lease");
    assert_eq!(t.owner("C").as_deref(), Some("wc"));
    t.ping("after C's hand-over");

    // And A itself is handed over when freed.
    let n: i64 = t.run(&["DEL", "lock:A"]);
    assert_eq!(n, 1);
    wa.ok(&s, "A's waiter, once lock:A is deleted");
    assert_eq!(t.owner("A").as_deref(), Some("wa"));
    t.ping("at the end");
}

/// Every way Redis lets a client move a held lock's expiry to the far future or remove it,
/// each with a waiter queued; then a short expiry, at whose end the waiter gets the lock.
#[test]
fn extreme_expiry_changes_on_a_waited_for_lock_keep_the_server_and_the_hand_over_working() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", 60);
    let w = t.blocked_call(block_for("x", "w", 10, 0));
    // EXPIREAT's largest: seconds * 1000 must not overflow.
    let max_expireat = (i64::MAX / 1000).to_string();
    let max_pexpireat = i64::MAX.to_string();
    for args in [
        &["EXPIREAT", "lock:x", &max_expireat][..],
        &["PEXPIREAT", "lock:x", &max_pexpireat],
        &["PERSIST", "lock:x"],
    ] {
        let n: i64 = t.run(args);
        assert_eq!(n, 1, "{}", args.join(" "));
        t.ping(&format!("after {}", args.join(" ")));
        assert_eq!(
            t.owner("x").as_deref(),
            Some("holder"),
            "{}",
            args.join(" ")
        );
        assert_eq!(t.blocked(), 1, "{}", args.join(" "));
    }
    let n: i64 = t.run(&["PEXPIRE", "lock:x", "50"]);
    assert_eq!(n, 1);
    w.ok(&s, "the waiter, once the 50 ms lease ends");
    assert_eq!(t.owner("x").as_deref(), Some("w"));
    t.ping("at the end");
}

// ---- B. writes while clients are paused ----

/// A primary on TCP (so a replica can attach) that pings its replicas only once an hour: its
/// replication offset then moves only when something is written.
fn quiet_primary() -> Server {
    Server::with(Options {
        tcp: true,
        args: ["--repl-ping-replica-period", "3600"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
}

fn get(s: &Server, key: &str) -> Option<String> {
    Client::new(s).run(&["GET", key])
}

/// While writes are paused Redis keeps an expired key in its dictionary: the module must not
/// write it (today: an assertion aborts the server), must not hand the lock over or replicate
/// anything, and must serve its waiters, in order, once the pause ends.
#[test]
fn a_lease_ending_during_client_pause_write_is_handed_over_after_the_pause_in_order() {
    let primary = quiet_primary();
    let replica = replica_of(&primary, false);
    let mut t = Client::new(&primary);
    sync_replicas(&mut t.c, 1);
    t.acquire("x", "holder", 1);
    let w1 = t.blocked_call(block_for("x", "w1", 10, 0));
    let w2 = t.blocked_call(block_for("x", "w2", 10, 0));
    let offset = t.repl_offset();
    let pttl: i64 = t.run(&["PTTL", "lock:x"]);
    assert!(
        pttl > 300,
        "the lease must end inside the pause: {pttl} ms left"
    );
    let r: String = t.run(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    assert_eq!(r, "OK");
    // Reads go on during a WRITE pause: wait until the lease is over as clients see it.
    let start = Instant::now();
    loop {
        let pttl: i64 = t.run(&["PTTL", "lock:x"]);
        if pttl == -2 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the lease never ended: {pttl}");
        thread::sleep(Duration::from_millis(5));
    }
    // The module's timer for the lease's end fires 1 ms after it: give it that, and some.
    for_a_while(Duration::from_millis(150), || {
        t.ping("during the pause, after the lease ended");
        assert_eq!(t.owner("x"), None, "nobody is handed the lock while paused");
        assert_eq!(t.blocked(), 2, "both waiters still wait");
        assert_eq!(t.repl_offset(), offset, "nothing replicated while paused");
    });
    let r: String = t.run(&["CLIENT", "UNPAUSE"]);
    assert_eq!(r, "OK");
    w1.ok(&primary, "w1, after the pause");
    assert_eq!(t.owner("x").as_deref(), Some("w1"));
    let pttl: i64 = t.run(&["PTTL", "lock:x"]);
    assert!(
        pttl > 9000,
        "w1's own 10 s lease, from the hand-over: {pttl}"
    );
    assert_eq!(t.blocked(), 1, "w2 still waits");
    sync_replicas(&mut t.c, 1);
    assert_eq!(get(&replica, "lock:x").as_deref(), Some("w1"));
    assert_eq!(t.release("x", "w1"), 1);
    w2.ok(&primary, "w2, once w1 releases");
    assert_eq!(t.owner("x").as_deref(), Some("w2"));
    assert!(!primary.log().contains("ASSERTION"));
}

/// During `CLIENT PAUSE ALL` every command of a normal client waits, so the test can only
/// watch the waiter's reply: it comes once the pause is over, not before, and the server lives.
#[test]
fn a_lease_ending_during_client_pause_all_is_handed_over_after_the_pause() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", 1);
    let w = t.blocked_call(block_for("x", "w", 10, 0));
    let pttl: i64 = t.run(&["PTTL", "lock:x"]);
    assert!(
        pttl > 300,
        "the lease must end inside the pause: {pttl} ms left"
    );
    let paused = Instant::now();
    let r: String = t.run(&["CLIENT", "PAUSE", "1500", "ALL"]);
    assert_eq!(r, "OK");
    let at = w.ok(&s, "the waiter, after the pause");
    assert!(
        at - paused + SLACK >= Duration::from_millis(1500),
        "handed over {:?} into a 1500 ms pause",
        at - paused
    );
    t.ping("after the pause");
    assert_eq!(t.owner("x").as_deref(), Some("w"));
    assert!(!s.log().contains("ASSERTION"), "{}", trouble(&s));
}

/// A foreign DEL and a pause in one pipeline: the hand-over the DEL asks for is made with the
/// DEL itself (a post-notification job, Redis 7.2+ and Valkey: before the pause began) or
/// waits for the end of the pause (the timer, Redis 7.0); it is never written while writes
/// are paused.
#[test]
fn a_release_just_before_a_pause_is_handed_over_after_the_pause() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", 60);
    let w = t.blocked_call(block_for("x", "w", 10, 0));
    let paused = Instant::now();
    let (n, r): (i64, String) = redis::pipe()
        .cmd("DEL")
        .arg("lock:x")
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query(&mut t.c)
        .unwrap_or_else(|e| panic!("DEL + CLIENT PAUSE: {}\n{}", why(&e), trouble(&s)));
    assert_eq!((n, r.as_str()), (1, "OK"));
    if t.owner("x").as_deref() == Some("w") {
        // Handed over with the DEL, before the pause: the waiter's reply may still wait for
        // the pause's end (a paused server holds replies back), but it is OK.
        w.ok(&s, "the waiter, handed the lock with the DEL");
        return;
    }
    for_a_while(Duration::from_millis(300), || {
        assert_eq!(t.owner("x"), None, "nobody is handed the lock while paused");
        assert_eq!(t.blocked(), 1, "the waiter still waits");
    });
    let at = w.ok(&s, "the waiter, after the pause");
    assert!(
        at - paused + SLACK >= Duration::from_millis(1000),
        "handed over {:?} into a 1000 ms pause",
        at - paused
    );
    assert_eq!(t.owner("x").as_deref(), Some("w"));
}

/// SIGSTOP on drop's opposite: the process is stopped while this lives, continued when it goes,
/// even if the test fails.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let stopped = Stopped(pid);
        // Wait until it is really stopped (state T in /proc/<pid>/stat).
        let start = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let state = stat.rsplit(')').next().unwrap().trim_start().chars().next();
            if state == Some('T') {
                return stopped;
            }
            assert!(start.elapsed() < DEADLINE, "{pid} not stopped: {stat}");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// FAILOVER pauses writes while it waits for a replica to catch up; with the replica stopped
/// it never does, and after its TIMEOUT the failover is aborted and writes resume. A lease
/// ending inside that window is handed over after it, on the primary, and reaches the replica.
#[test]
fn a_lease_ending_during_an_aborted_failover_is_handed_over_after_it() {
    let primary = quiet_primary();
    let replica = replica_of(&primary, false);
    let mut t = Client::new(&primary);
    // The replica has everything so far: it can only fall behind from the SIGSTOP on.
    sync_replicas(&mut t.c, 1);
    t.acquire("x", "holder", 1);
    let w = t.blocked_call(block_for("x", "w", 10, 0));
    let stopped = Stopped::new(replica.pid());
    // A write the stopped replica cannot acknowledge: FAILOVER would otherwise find it caught
    // up and go ahead.
    let _: String = t.run(&["SET", "behind", "1"]);
    let pttl: i64 = t.run(&["PTTL", "lock:x"]);
    assert!(
        pttl > 300,
        "the lease must end inside the failover: {pttl} ms left"
    );
    let started = Instant::now();
    let r: String = t.run(&["FAILOVER", "TIMEOUT", "1500"]);
    assert_eq!(r, "OK");
    let at = w.ok(&primary, "the waiter, after the failover gave up");
    assert!(
        at - started + SLACK >= Duration::from_millis(1500),
        "handed over {:?} into a 1500 ms failover",
        at - started
    );
    t.ping("after the failover");
    assert_eq!(t.info("replication", "role"), "master");
    assert_eq!(
        t.info("replication", "master_failover_state"),
        "no-failover"
    );
    assert!(
        primary
            .log()
            .contains("Replica never caught up before timeout"),
        "the failover was aborted by its timeout\n{}",
        trouble(&primary)
    );
    assert_eq!(t.owner("x").as_deref(), Some("w"));
    drop(stopped);
    sync_replicas(&mut t.c, 1);
    assert_eq!(get(&replica, "lock:x").as_deref(), Some("w"));
}

/// `CLIENT UNBLOCK` of a client that `CLIENT PAUSE` holds back aborts the server itself, on every
/// server tested and with no module loaded (valkey-io/valkey#2111), and a LOCK.ACQUIRE sent
/// during a pause is such a client. While writes are paused the module refuses `CLIENT
/// UNBLOCK` of any blocked client that is not one of its queued waiters: the server stays up,
/// the held-back command runs after the pause, and a queued waiter is still unblocked.
#[test]
fn client_unblock_of_a_client_held_back_by_a_pause_is_refused_not_an_abort() {
    let s = Server::start();
    let mut t = Client::new(&s);
    t.acquire("x", "holder", 60);
    let queued = spawn_blocked::<Option<String>>(&s, block_for("x", "queued", 10, 0));
    let _: String = t.run(&["CLIENT", "PAUSE", "20000", "WRITE"]);
    let held = spawn_blocked::<Option<String>>(&s, block_for("y", "held", 10, 0));
    let r: redis::RedisResult<i64> =
        cmd(&["CLIENT", "UNBLOCK", &held.id.to_string()]).query(&mut t.c);
    let e = r.expect_err("CLIENT UNBLOCK of a client held back by the pause is refused");
    assert!(e.to_string().contains("paused"), "{e}");
    t.ping("after CLIENT UNBLOCK of a client held back by the pause");
    let n: i64 = t.run(&["CLIENT", "UNBLOCK", &queued.id.to_string()]);
    assert_eq!(
        n, 1,
        "a queued waiter is the module's to unblock, pause or not"
    );
    assert_eq!(queued.wait().unwrap(), None);
    let _: String = t.run(&["CLIENT", "UNPAUSE"]);
    assert_eq!(
        held.wait().unwrap().as_deref(),
        Some("OK"),
        "the held-back acquire ran"
    );
    t.ping("after the pause");
}
