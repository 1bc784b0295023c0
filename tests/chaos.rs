//! Chaos test: random LOCK.* commands mixed with the server's own commands that pull locks
//! away, move them, pause, reload, unblock and kill clients; invariants checked after every
//! step. No model of who should own what: only what must hold whatever happened.
//!
//! Every connection is a raw unix socket: the test writes RESP itself and parses replies
//! incrementally, keeping per connection the queue of commands still to be answered, so that
//! a missing, extra or misplaced reply is seen. Invariants:
//! - the server answers PING on a control connection after every step, within `DEADLINE`;
//! - every command gets exactly one reply, in order: a reply with nothing outstanding is a
//!   failure; a connection that goes idle is sent PING, and the very next reply must be
//!   `+PONG`; the server closes only connections the test killed (or that a demotion
//!   unblocked);
//! - replies have the command's shape: `LOCK.ACQUIRE` OK or nil (an error only after the
//!   test's `CLIENT UNBLOCK ... ERROR` or a demotion), `LOCK.RELEASE`/`LOCK.RENEW` 0 or 1,
//!   `LOCK.OWNER` a bulk string or nil; malformed calls an error;
//! - a malformed call changes nothing (checked on a canary lock: same owner, same expiry);
//! - a waiter answered nil had its BLOCK time run out, or was `CLIENT UNBLOCK`ed; `CLIENT
//!   UNBLOCK` that replied 1 means the waiter's reply is nil (`-UNBLOCKED` with `ERROR`),
//!   never OK;
//! - whoever got OK for lock n with token t is `LOCK.OWNER n` right after, unless something
//!   that takes locks away (DEL, SET, expiry, flush, swap, reset, a release by t, a demotion, a
//!   lease of under 5 s) was sent since its command;
//! - no reply overdue: a command that does not wait is answered within `SLACK`, a wait with a
//!   BLOCK time within BLOCK + `SLACK`;
//! - no lost wake-up: a waiter's lock is not free at every check for `LOST_WAKEUP`, nor for
//!   `LOST_WAKEUP_QUIET` in a quiet moment (a step that only reads replies for a while: on a
//!   busy lock the next acquire would serve the queue and hide a lost wake-up);
//! - at the end (unpause, a quiet moment, then `LOCK.RESETALL` and `FLUSHALL` until nobody
//!   waits), every outstanding command is answered within `DEADLINE`, every connection still
//!   answers PING, no client is blocked, and the server's log has no assertion, crash or
//!   module panic.
//!
//! Steps: `LOCK.ACQUIRE` with and without BLOCK (0, 5-50 ms, long, the largest), boundary
//! TTLs (1, the largest), RELEASE/RENEW by owner and non-owner, OWNER; binary names and
//! tokens (NUL, CR LF, spaces, 0xff, RESP text); malformed calls (bad integers, empty token,
//! wrong arity, unknown option); `DEL`/`UNLINK`, `SET lock:n x PXAT <max>`, `PEXPIRE` 10-30
//! ms, `EXPIREAT <huge>`, `PERSIST`, python-redis-lock's `SET NX EX` and release script,
//! `FLUSHALL`/`FLUSHDB`, `SWAPDB 0 1`, `DEBUG RELOAD`, `LOCK.RESETALL`, `CLIENT UNBLOCK`
//! (TIMEOUT/ERROR), `CLIENT KILL ID`, hang-ups, `CLIENT PAUSE` WRITE/ALL of 20-100 ms,
//! pipelines that release and unblock/kill in one event-loop pass, commands queued behind a
//! blocked acquire on its connection, and a demotion (`REPLICAOF` a plain server, then
//! `REPLICAOF NO ONE`). Waiters live in databases 0 and 1.
//!
//! Not sent: `CLIENT UNBLOCK` while a `CLIENT PAUSE` may hold a client. Every server tested
//! (Redis 7.0-8.0, Valkey 8.0) aborts on `CLIENT UNBLOCK <id>` of a client held by a pause
//! ("Unknown btype in replyToBlockedClientTimedOut()"), with or without this module
//! (valkey-io/valkey#2111).
//!
//! Knobs: `RLOCK_CHAOS_STEPS` (steps per seed, default 1000), `RLOCK_CHAOS_SEEDS` (default 3),
//! `RLOCK_CHAOS_SEED=<n>` (only seed n), `RLOCK_CHAOS_TRACE=1` (print every command and reply).
//! A failure prints the seed, the step and the last commands and replies. The choices are the
//! seed's, but what the server answers depends on timing, so a rerun takes the same path only
//! as far as the replies are the same.

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Lock names: plain, and with bytes that break careless code (a space, CR LF, NUL, 0xff,
/// RESP text, nothing).
const NAMES: [&[u8]; 6] = [
    b"c0",
    b"c 1\r\n",
    b"\0c2\xff",
    b"*1\r\n$4\r\nPING\r\n",
    b"",
    b"c5",
];
/// Only malformed calls name it: whatever they do, it must not change.
const CANARY: &[u8] = b"canary";
const CANARY_TOKEN: &[u8] = b"canary-token";
const MAX_TTL: u64 = 2_305_843_009_213_693;
const MAX_BLOCK: u64 = 2_305_843_009_213_693_951;
const DBS: usize = 2;
/// Client connections (besides the two control connections), waiting or idle.
const MAX_CLIENTS: usize = 14;
/// A lease shorter than this may run out between an OK and the owner check.
const SHORT_TTL: u64 = 5;
/// How late a reply may be beyond its due time before it counts as missing.
const SLACK: Duration = Duration::from_secs(5);
/// How long a lock may be seen free while a client waits for it: while steps run (pauses
/// may hold hand-overs back), and in a quiet moment.
const LOST_WAKEUP: Duration = Duration::from_secs(2);
const LOST_WAKEUP_QUIET: Duration = Duration::from_millis(250);
/// `CLIENT UNBLOCK` is sent only this long after the last pause ended.
const PAUSE_MARGIN: Duration = Duration::from_millis(50);

const PY_RELEASE: &str = r#"if redis.call("get", KEYS[1]) ~= ARGV[1] then return 1 else redis.call("del", KEYS[2]); redis.call("lpush", KEYS[2], 1); redis.call("pexpire", KEYS[2], 1000); redis.call("del", KEYS[1]); return 0 end"#;

// ---- RESP ----

#[derive(Clone, Debug, PartialEq)]
enum V {
    Status(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<V>>),
}

impl V {
    fn is_ok(&self) -> bool {
        matches!(self, V::Status(s) if s == b"OK")
    }
    fn is_error_with(&self, prefix: &[u8]) -> bool {
        matches!(self, V::Error(e) if e.starts_with(prefix))
    }
    fn show(&self) -> String {
        match self {
            V::Status(s) => format!("+{}", show(s)),
            V::Error(e) => format!("-{}", show(e)),
            V::Int(n) => format!(":{n}"),
            V::Bulk(None) => "nil".into(),
            V::Bulk(Some(b)) => format!("\"{}\"", show(b)),
            V::Array(None) => "nil array".into(),
            V::Array(Some(items)) => format!(
                "[{}]",
                items.iter().map(V::show).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

fn show(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 60 {
        format!("{}...", &s[..60])
    } else {
        s
    }
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn text(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            let s = show(a);
            if s.is_empty() || s.contains(' ') {
                format!("\"{s}\"")
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One reply from `buf[pos..]`: the value and where the next one starts, `None` if it has not
/// fully arrived yet.
fn parse(buf: &[u8], pos: usize) -> Result<Option<(V, usize)>, String> {
    let Some(len) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[pos + 1..pos + len];
    let next = pos + len + 2;
    let int = |l: &[u8]| -> Result<i64, String> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP integer {:?}", show(l)))
    };
    Ok(Some(match buf[pos] {
        b'+' => (V::Status(line.to_vec()), next),
        b'-' => (V::Error(line.to_vec()), next),
        b':' => (V::Int(int(line)?), next),
        b'$' => {
            let n = int(line)?;
            if n < 0 {
                (V::Bulk(None), next)
            } else {
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err("bulk string not followed by CR LF".into());
                }
                (V::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)
            }
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                (V::Array(None), next)
            } else {
                let (mut items, mut p) = (Vec::new(), next);
                for _ in 0..n {
                    match parse(buf, p)? {
                        Some((v, q)) => {
                            items.push(v);
                            p = q;
                        }
                        None => return Ok(None),
                    }
                }
                (V::Array(Some(items)), p)
            }
        }
        other => return Err(format!("bad RESP type byte {:?}", other as char)),
    }))
}

// ---- commands and connections ----

/// What a reply must look like.
#[derive(Clone, Debug)]
enum Kind {
    /// A valid LOCK.ACQUIRE: OK or nil.
    Acquire {
        db: usize,
        lock: usize,
        token: Vec<u8>,
        ttl: u64,
        block: Option<u64>,
        /// Whether an OK is followed by the owner check.
        check_owner: bool,
    },
    /// LOCK.RELEASE: 0 or 1; 1 is a release by `token`.
    Release {
        db: usize,
        lock: usize,
        token: Vec<u8>,
    },
    /// LOCK.RENEW: 0 or 1.
    Int01,
    /// LOCK.OWNER: a bulk string or nil.
    Owner,
    /// A malformed call: an error.
    Invalid,
    /// `CLIENT UNBLOCK` of the waiting acquire `target`: 0 or 1.
    Unblock {
        target: u64,
        error: bool,
    },
    /// `CLIENT UNBLOCK` of a client that waits for nothing: 0.
    Zero,
    /// A command queued in MULTI.
    Queued,
    /// EXEC: an array of the queued commands' replies, each of its kind.
    Exec(Vec<Kind>),
    Pong,
    Okay,
    Int,
    Any,
}

struct Expect {
    seq: u64,
    step: usize,
    sent: Instant,
    text: String,
    kind: Kind,
    /// Keep the reply for the test to read (`Chaos::wait_for`).
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Live,
    /// `CLIENT KILL`ed: the server closes it; outstanding replies may be lost.
    Killed,
    /// Had commands outstanding when the server was demoted: may be closed after an
    /// `-UNBLOCKED` error. Not given new commands.
    Doomed,
}

struct Conn {
    label: String,
    id: i64,
    db: usize,
    stream: Option<UnixStream>,
    buf: Vec<u8>,
    out: VecDeque<Expect>,
    fate: Fate,
    /// Went idle: send PING, whose reply must be the very next one.
    ping_due: bool,
}

impl Conn {
    fn open(&self) -> bool {
        self.stream.is_some()
    }
    fn idle(&self) -> bool {
        self.open() && self.fate == Fate::Live && self.out.is_empty() && !self.ping_due
    }
    /// The acquire this connection is waiting in, as far as the test knows.
    fn waiting(&self) -> Option<(u64, usize, usize)> {
        match self.out.front() {
            Some(Expect {
                seq,
                kind:
                    Kind::Acquire {
                        block: Some(_),
                        db,
                        lock,
                        ..
                    },
                ..
            }) if self.open() && self.fate == Fate::Live => Some((*seq, *db, *lock)),
            _ => None,
        }
    }
    /// Waiting, with no other wait queued behind: a `CLIENT UNBLOCK` that replies 1 ended
    /// this one.
    fn unblock_target(&self) -> Option<(u64, usize, usize)> {
        let waits = self
            .out
            .iter()
            .filter(|e| matches!(e.kind, Kind::Acquire { block: Some(_), .. }))
            .count();
        self.waiting().filter(|_| waits == 1)
    }
}

#[derive(Default, Debug)]
struct Stats {
    steps: usize,
    commands: u64,
    waits: u64,
    ok: u64,
    nil: u64,
    unblocked_error: u64,
    owner_checks: u64,
    owner_checks_skipped: u64,
    unblocks_1: u64,
    kills: u64,
    pauses: u64,
    demotions: u64,
    lost_to_kill: u64,
    /// Sum over steps of the connections waiting in an acquire after the step.
    waiting_sum: usize,
}

struct Chaos {
    seed: u64,
    step: usize,
    seq: u64,
    rng: StdRng,
    server: Server,
    /// A plain TCP server for the demotion step, started when first needed.
    primary: Option<Server>,
    sock: PathBuf,
    /// 0 and 1: control connections in databases 0 and 1; then clients.
    conns: Vec<Conn>,
    kept: HashMap<u64, V>,
    /// The last command (seq) after which each lock of each database may have been taken
    /// away by something other than a hand-over.
    lock_mark: [[u64; NAMES.len()]; DBS],
    /// The last command that may have released `token`'s hold on a lock, or set it a short
    /// lease.
    token_mark: HashMap<(usize, usize, Vec<u8>), u64>,
    /// `CLIENT UNBLOCK`s sent to a waiting acquire (by its seq): with ERROR or not.
    unblock_sent: HashMap<u64, Vec<bool>>,
    /// `CLIENT UNBLOCK`s of a waiting acquire that replied 1.
    unblocked: HashMap<u64, bool>,
    /// Replies of waiting acquires.
    answered: HashMap<u64, V>,
    owner_checks: Vec<(usize, usize, Vec<u8>, u64)>,
    /// Waiting acquires (by seq) whose lock has been free at every check since then.
    free_while_waiting: HashMap<u64, Instant>,
    paused_until: Option<Instant>,
    /// Commands sent before this seq may see the demotion (READONLY, -UNBLOCKED, a close).
    demoted_before: u64,
    tokens: VecDeque<Vec<u8>>,
    trace: VecDeque<String>,
    verbose: bool,
    stats: Stats,
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let server = Server::start();
        let sock = PathBuf::from(
            server
                .url
                .strip_prefix("redis+unix://")
                .expect("a unix socket server"),
        );
        let mut chaos = Chaos {
            seed,
            step: 0,
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            server,
            primary: None,
            sock,
            conns: Vec::new(),
            kept: HashMap::new(),
            lock_mark: [[0; NAMES.len()]; DBS],
            token_mark: HashMap::new(),
            unblock_sent: HashMap::new(),
            unblocked: HashMap::new(),
            answered: HashMap::new(),
            owner_checks: Vec::new(),
            free_while_waiting: HashMap::new(),
            paused_until: None,
            demoted_before: 0,
            tokens: VecDeque::new(),
            trace: VecDeque::new(),
            verbose: std::env::var_os("RLOCK_CHAOS_TRACE").is_some(),
            stats: Stats::default(),
        };
        for db in 0..DBS {
            chaos.connect(db, format!("ctl{db}"));
        }
        chaos
    }

    // ---- reporting ----

    fn note(&mut self, what: String) {
        if self.verbose {
            eprintln!("seed {} step {}: {what}", self.seed, self.step);
        }
        self.trace.push_back(format!("step {}: {what}", self.step));
        if self.trace.len() > 60 {
            self.trace.pop_front();
        }
    }

    fn fail(&self, msg: String) -> ! {
        let mut s = format!(
            "{msg}\n  seed {} step {} (rerun: RLOCK_CHAOS_SEED={} RLOCK_CHAOS_STEPS={} cargo test --release --test chaos)\n  connections:",
            self.seed, self.step, self.seed, self.step
        );
        for c in &self.conns {
            if !c.open() && c.out.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "\n    {} (client {}, db {}, {:?}{}): {} outstanding",
                c.label,
                c.id,
                c.db,
                c.fate,
                if c.open() { "" } else { ", closed" },
                c.out.len()
            ));
            for e in &c.out {
                s.push_str(&format!(
                    "\n      #{} {} (step {}, {:?} ago)",
                    e.seq,
                    e.text,
                    e.step,
                    e.sent.elapsed()
                ));
            }
        }
        s.push_str("\n  last commands and replies:");
        for t in &self.trace {
            s.push_str("\n    ");
            s.push_str(t);
        }
        let log = self.server.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        s.push_str("\n  server log (tail):");
        for l in tail.into_iter().rev() {
            s.push_str("\n    ");
            s.push_str(l);
        }
        panic!("{s}");
    }

    // ---- connections ----

    fn connect(&mut self, db: usize, label: String) -> usize {
        let stream = UnixStream::connect(&self.sock)
            .unwrap_or_else(|e| self.fail(format!("connect to the server: {e}")));
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        let c = self.conns.len();
        self.conns.push(Conn {
            label,
            id: 0,
            db,
            stream: Some(stream),
            buf: Vec::new(),
            out: VecDeque::new(),
            fate: Fate::Live,
            ping_due: false,
        });
        let id = match self.query(c, vec![b"CLIENT".to_vec(), b"ID".to_vec()], Kind::Int) {
            V::Int(id) => id,
            v => self.fail(format!("CLIENT ID replied {}", v.show())),
        };
        self.conns[c].id = id;
        if db != 0 {
            self.query(c, args(&[b"SELECT", db.to_string().as_bytes()]), Kind::Okay);
        }
        c
    }

    /// Send commands on connection `c` in one write (one event-loop pass on the server).
    fn send_all(&mut self, c: usize, cmds: Vec<(Vec<Vec<u8>>, Kind)>, keep: bool) -> Vec<u64> {
        let mut bytes = Vec::new();
        let mut seqs = Vec::new();
        let label = self.conns[c].label.clone();
        let many = cmds.len() > 1;
        for (a, kind) in cmds {
            self.seq += 1;
            self.stats.commands += 1;
            bytes.extend_from_slice(&encode(&a));
            let t = text(&a);
            self.note(format!(
                "{label}{} #{} {t}",
                if many { " (pipelined)" } else { "" },
                self.seq
            ));
            self.conns[c].out.push_back(Expect {
                seq: self.seq,
                step: self.step,
                sent: Instant::now(),
                text: t,
                kind,
                keep,
            });
            seqs.push(self.seq);
        }
        let res = match self.conns[c].stream.as_mut() {
            Some(s) => s.write_all(&bytes),
            None => self.fail(format!("{label}: write on a closed connection")),
        };
        if let Err(e) = res {
            self.fail(format!("{label}: write failed: {e}"));
        }
        seqs
    }

    fn send(&mut self, c: usize, a: Vec<Vec<u8>>, kind: Kind) -> u64 {
        self.send_all(c, vec![(a, kind)], false)[0]
    }

    /// Send and wait for the reply (earlier outstanding replies on `c` are checked first).
    fn query(&mut self, c: usize, a: Vec<Vec<u8>>, kind: Kind) -> V {
        let seq = self.send_all(c, vec![(a, kind)], true)[0];
        self.wait_for(c, seq)
    }

    /// Pipeline on `c` in one write, then wait for every reply.
    fn query_all(&mut self, c: usize, cmds: Vec<(Vec<Vec<u8>>, Kind)>) -> Vec<V> {
        let seqs = self.send_all(c, cmds, true);
        seqs.into_iter().map(|s| self.wait_for(c, s)).collect()
    }

    fn wait_for(&mut self, c: usize, seq: u64) -> V {
        let start = Instant::now();
        loop {
            if let Some(v) = self.kept.remove(&seq) {
                return v;
            }
            if !self.conns[c].open() {
                self.fail(format!(
                    "{}: closed before the reply to #{seq}",
                    self.conns[c].label
                ));
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            if left.is_zero() {
                self.fail(format!(
                    "{}: no reply to #{seq} within {DEADLINE:?}",
                    self.conns[c].label
                ));
            }
            self.read(c, Some(left.min(Duration::from_millis(100))));
        }
    }

    /// Read what has arrived on `c` (waiting up to `wait` for something) and check each reply;
    /// then, if the server has closed the connection, see that it was allowed to.
    fn read(&mut self, c: usize, wait: Option<Duration>) {
        let mut chunk = [0u8; 16384];
        let mut eof = false;
        let mut first = true;
        loop {
            let res = {
                let Some(stream) = self.conns[c].stream.as_mut() else {
                    return;
                };
                match wait {
                    Some(d) if first => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(d.max(Duration::from_millis(1))))
                            .unwrap();
                    }
                    _ => stream.set_nonblocking(true).unwrap(),
                }
                stream.read(&mut chunk)
            };
            first = false;
            match res {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.conns[c].buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    eof = true;
                    break;
                }
                Err(e) => self.fail(format!("{}: read failed: {e}", self.conns[c].label)),
            }
        }
        loop {
            let parsed = match parse(&self.conns[c].buf, 0) {
                Ok(p) => p,
                Err(e) => self.fail(format!("{}: {e}", self.conns[c].label)),
            };
            let Some((v, used)) = parsed else { break };
            self.conns[c].buf.drain(..used);
            self.on_reply(c, v);
        }
        if eof {
            self.on_eof(c);
        }
    }

    fn on_eof(&mut self, c: usize) {
        let conn = &self.conns[c];
        if conn.fate == Fate::Live {
            self.fail(format!(
                "{} (client {}): the server closed the connection",
                conn.label, conn.id
            ));
        }
        let (label, lost) = (conn.label.clone(), conn.out.len());
        self.note(format!(
            "{label}: closed by the server, {lost} replies not sent"
        ));
        self.stats.lost_to_kill += lost as u64;
        let conn = &mut self.conns[c];
        conn.stream = None;
        conn.out.clear();
        conn.ping_due = false;
    }

    fn on_reply(&mut self, c: usize, v: V) {
        let label = self.conns[c].label.clone();
        let Some(e) = self.conns[c].out.pop_front() else {
            self.fail(format!(
                "{label}: a reply with no command outstanding: {}",
                v.show()
            ));
        };
        self.note(format!("{label} #{} -> {}", e.seq, v.show()));
        let demoted = e.seq < self.demoted_before;
        if demoted && v.is_error_with(b"READONLY") {
            // Sent before a demotion, run while the server was a replica.
        } else {
            self.check_reply(c, &e, &v);
        }
        if e.keep {
            self.kept.insert(e.seq, v.clone());
        }
        let conn = &mut self.conns[c];
        if conn.fate == Fate::Doomed && v.is_error_with(b"UNBLOCKED") {
            // A demotion unblocked it: the server closes it after this reply.
            conn.fate = Fate::Killed;
        }
        if conn.out.is_empty() && c >= DBS && !matches!(e.kind, Kind::Pong) {
            conn.ping_due = true;
        }
    }

    fn check_reply(&mut self, c: usize, e: &Expect, v: &V) {
        let bad = |me: &Chaos, what: &str| -> ! {
            me.fail(format!(
                "{}: {} (#{}, step {}) replied {}: {what}",
                me.conns[c].label,
                e.text,
                e.seq,
                e.step,
                v.show()
            ))
        };
        match &e.kind {
            Kind::Pong => {
                if *v != V::Status(b"PONG".to_vec()) {
                    bad(
                        self,
                        "expected +PONG (the very next reply after a PING on an idle connection)",
                    );
                }
            }
            Kind::Okay => {
                if !v.is_ok() {
                    bad(self, "expected OK");
                }
            }
            Kind::Int => {
                if !matches!(v, V::Int(_)) {
                    bad(self, "expected an integer");
                }
            }
            Kind::Any => {}
            Kind::Zero => {
                if *v != V::Int(0) {
                    bad(
                        self,
                        "CLIENT UNBLOCK of a client that waits for nothing replies 0",
                    );
                }
            }
            Kind::Queued => {
                if *v != V::Status(b"QUEUED".to_vec()) {
                    bad(self, "expected +QUEUED");
                }
            }
            Kind::Exec(kinds) => {
                let V::Array(Some(items)) = v else {
                    bad(self, "EXEC replies an array")
                };
                if items.len() != kinds.len() {
                    bad(self, "EXEC replies one reply per queued command");
                }
                for (item, kind) in items.iter().zip(kinds) {
                    let inner = Expect {
                        seq: e.seq,
                        step: e.step,
                        sent: e.sent,
                        text: format!("{} (in EXEC)", e.text),
                        kind: kind.clone(),
                        keep: false,
                    };
                    self.check_reply(c, &inner, item);
                }
            }
            Kind::Invalid => {
                if !matches!(v, V::Error(_)) {
                    bad(self, "a malformed call must get an error");
                }
            }
            Kind::Owner => {
                if !matches!(v, V::Bulk(_)) {
                    bad(self, "LOCK.OWNER replies a bulk string or nil");
                }
            }
            Kind::Int01 => {
                if !matches!(v, V::Int(0 | 1)) {
                    bad(self, "expected 0 or 1");
                }
            }
            Kind::Release { db, lock, token } => match v {
                V::Int(1) => {
                    self.token_mark.insert((*db, *lock, token.clone()), e.seq);
                }
                V::Int(0) => {}
                _ => bad(self, "LOCK.RELEASE replies 0 or 1"),
            },
            Kind::Unblock { target, error } => match v {
                V::Int(1) => {
                    self.stats.unblocks_1 += 1;
                    self.unblocked.insert(*target, *error);
                    if let Some(got) = self.answered.get(target).cloned() {
                        self.check_unblocked(*target, &got);
                    }
                }
                V::Int(0) => {}
                _ => bad(self, "CLIENT UNBLOCK replies 0 or 1"),
            },
            Kind::Acquire {
                db,
                lock,
                token,
                ttl,
                block,
                check_owner,
            } => {
                let sent = self.unblock_sent.get(&e.seq).cloned().unwrap_or_default();
                let demoted = e.seq < self.demoted_before;
                if v.is_ok() {
                    self.stats.ok += 1;
                    if *check_owner && *ttl >= SHORT_TTL {
                        self.owner_checks.push((*db, *lock, token.clone(), e.seq));
                    }
                } else if *v == V::Bulk(None) {
                    self.stats.nil += 1;
                    if let Some(ms) = block {
                        let ran_out = *ms > 0 && e.sent.elapsed() >= Duration::from_millis(*ms);
                        if !ran_out && !sent.contains(&false) {
                            bad(
                                self,
                                "nil before its BLOCK time ran out, and no CLIENT UNBLOCK was sent to it",
                            );
                        }
                    }
                } else if v.is_error_with(b"UNBLOCKED") {
                    self.stats.unblocked_error += 1;
                    if !sent.contains(&true) && !demoted {
                        bad(
                            self,
                            "-UNBLOCKED without a CLIENT UNBLOCK ... ERROR or a demotion",
                        );
                    }
                } else {
                    bad(self, "LOCK.ACQUIRE replies OK or nil");
                }
                if block.is_some() {
                    self.answered.insert(e.seq, v.clone());
                    if self.unblocked.contains_key(&e.seq) {
                        self.check_unblocked(e.seq, v);
                    }
                }
            }
        }
    }

    /// `CLIENT UNBLOCK` replied 1 for the acquire `target`, which replied `got`.
    fn check_unblocked(&self, target: u64, got: &V) {
        let error = self.unblocked[&target];
        let fine = if error {
            got.is_error_with(b"UNBLOCKED")
        } else {
            *got == V::Bulk(None)
        };
        if !fine {
            self.fail(format!(
                "CLIENT UNBLOCK{} of acquire #{target} replied 1, but the acquire replied {}",
                if error { " ERROR" } else { "" },
                got.show()
            ));
        }
    }

    /// Read everything that has arrived on every connection; PING the connections that went
    /// idle; check the owner of every lock just handed out.
    fn poll(&mut self) {
        for c in 0..self.conns.len() {
            self.read(c, None);
        }
        for c in DBS..self.conns.len() {
            let conn = &self.conns[c];
            if conn.fate == Fate::Doomed && conn.out.is_empty() && conn.open() {
                // Never reused: hang up.
                self.hang_up(c);
                continue;
            }
            if conn.ping_due && conn.open() && conn.fate == Fate::Live {
                self.conns[c].ping_due = false;
                self.send(c, args(&[b"PING"]), Kind::Pong);
            }
        }
        for (db, lock, token, seq) in std::mem::take(&mut self.owner_checks) {
            let since_mark = self.lock_mark[db][lock] > seq
                || self
                    .token_mark
                    .get(&(db, lock, token.clone()))
                    .is_some_and(|m| *m > seq);
            if since_mark {
                self.stats.owner_checks_skipped += 1;
                continue;
            }
            self.stats.owner_checks += 1;
            let got = self.query(db, args(&[b"LOCK.OWNER", NAMES[lock]]), Kind::Owner);
            if got != V::Bulk(Some(token.clone())) {
                self.fail(format!(
                    "#{seq} got OK for lock {:?} (db {db}) with token {:?}, but LOCK.OWNER says {}",
                    show(NAMES[lock]),
                    show(&token),
                    got.show()
                ));
            }
        }
    }

    fn hang_up(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        conn.stream = None;
        conn.out.clear();
        conn.ping_due = false;
        let label = conn.label.clone();
        self.note(format!("{label}: hangs up"));
    }

    /// No reply is overdue.
    fn check_overdue(&self) {
        for conn in &self.conns {
            if !conn.open() || conn.fate != Fate::Live {
                continue;
            }
            let Some(e) = conn.out.front() else { continue };
            let due = match e.kind {
                Kind::Acquire { block: Some(0), .. } => continue,
                Kind::Acquire {
                    block: Some(ms), ..
                } => Duration::from_millis(ms.min(1 << 40)) + SLACK,
                _ => SLACK,
            };
            if e.sent.elapsed() > due {
                self.fail(format!(
                    "{}: {} (#{}) has had no reply for {:?}",
                    conn.label,
                    e.text,
                    e.seq,
                    e.sent.elapsed()
                ));
            }
        }
    }

    /// No lost wake-up: a client waits for a lock that stays free. (A free lock is handed to
    /// its first waiter at once, or on the module timer's next tick; while writes are paused,
    /// right after the pause, and pauses are short.)
    fn check_lost_wakeups(&mut self, limit: Duration) {
        let waits: Vec<(u64, usize, usize)> = (DBS..self.conns.len())
            .filter_map(|c| self.conns[c].waiting())
            .collect();
        let mut free = HashMap::new();
        for (seq, db, lock) in waits {
            let is_free = *free
                .entry((db, lock))
                .or_insert_with(|| self.owner_of(db, lock).is_none());
            if !is_free {
                self.free_while_waiting.remove(&seq);
                continue;
            }
            let since = *self
                .free_while_waiting
                .entry(seq)
                .or_insert_with(Instant::now);
            if since.elapsed() > limit {
                self.fail(format!(
                    "#{seq} waits for lock {:?} (db {db}), which has been free at every check for {:?}",
                    show(NAMES[lock]),
                    since.elapsed()
                ));
            }
        }
    }

    fn ping_server(&mut self) {
        self.query(0, args(&[b"PING"]), Kind::Pong);
    }

    // ---- choices ----

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn pick_db(&mut self) -> usize {
        if self.rng.random_bool(0.8) {
            0
        } else {
            1
        }
    }

    fn fresh_token(&mut self) -> Vec<u8> {
        let mut t = format!("s{}-{}", self.seed, self.seq + 1).into_bytes();
        if self.rng.random_bool(0.2) {
            let tail: &[u8] = self.pick(&[
                b" x".as_slice(),
                b"\r\n",
                b"\0",
                b"\xff\xfe",
                b"*1\r\n$4\r\nPING\r\n",
                b"$-1\r\n",
            ]);
            t.extend_from_slice(tail);
        }
        self.tokens.push_back(t.clone());
        if self.tokens.len() > 40 {
            self.tokens.pop_front();
        }
        t
    }

    fn owner_of(&mut self, db: usize, lock: usize) -> Option<Vec<u8>> {
        match self.query(db, args(&[b"LOCK.OWNER", NAMES[lock]]), Kind::Owner) {
            V::Bulk(b) => b,
            _ => unreachable!(),
        }
    }

    /// The owner's token (if any), a recent token, or a fresh one.
    fn pick_token(&mut self, db: usize, lock: usize) -> Vec<u8> {
        let roll = self.rng.random_range(0..100);
        if roll < 35 {
            if let Some(t) = self.owner_of(db, lock) {
                return t;
            }
        } else if roll < 60 && !self.tokens.is_empty() {
            let i = self.rng.random_range(0..self.tokens.len());
            return self.tokens[i].clone();
        }
        self.fresh_token()
    }

    fn pick_ttl(&mut self) -> u64 {
        match self.rng.random_range(0..100) {
            0..=7 => self.rng.random_range(1..=2),
            8..=11 => MAX_TTL,
            _ => self.rng.random_range(10..=120),
        }
    }

    fn pick_block(&mut self) -> u64 {
        match self.rng.random_range(0..100) {
            0..=24 => 0,
            25..=59 => self.rng.random_range(5..=50),
            60..=74 => self.rng.random_range(100..=2000),
            75..=84 => MAX_BLOCK,
            _ => 3_600_000,
        }
    }

    /// A short lease, or a renewal to one, by `token`: it may lose the lock by expiry.
    fn short_lease(&mut self, db: usize, lock: usize, token: &[u8], ttl: u64) {
        if ttl < SHORT_TTL {
            self.token_mark
                .insert((db, lock, token.to_vec()), self.seq + 1);
        }
    }

    /// Something other than a hand-over may take `lock` (None: every lock) of `db` (None:
    /// both) away from its owner from the next command on.
    fn foreign(&mut self, db: Option<usize>, lock: Option<usize>) {
        for d in 0..DBS {
            for l in 0..NAMES.len() {
                if db.is_none_or(|x| x == d) && lock.is_none_or(|x| x == l) {
                    self.lock_mark[d][l] = self.seq + 1;
                }
            }
        }
    }

    fn acquire_args(lock: usize, token: &[u8], ttl: u64, block: Option<u64>) -> Vec<Vec<u8>> {
        let mut a = args(&[
            b"LOCK.ACQUIRE",
            NAMES[lock],
            token,
            ttl.to_string().as_bytes(),
        ]);
        if let Some(ms) = block {
            a.push(b"BLOCK".to_vec());
            a.push(ms.to_string().into_bytes());
        }
        a
    }

    fn live_clients(&self) -> usize {
        (DBS..self.conns.len())
            .filter(|c| self.conns[*c].open())
            .count()
    }

    /// An idle client connection in `db`, a new one if there is room, or None.
    fn idle_client(&mut self, db: usize) -> Option<usize> {
        let idle: Vec<usize> = (DBS..self.conns.len())
            .filter(|c| self.conns[*c].idle() && self.conns[*c].db == db)
            .collect();
        if !idle.is_empty() && (self.rng.random_bool(0.7) || self.live_clients() >= MAX_CLIENTS) {
            return Some(self.pick(&idle));
        }
        if self.live_clients() < MAX_CLIENTS {
            let label = format!("c{}", self.conns.len());
            return Some(self.connect(db, label));
        }
        None
    }

    fn waiting_clients(&self) -> Vec<usize> {
        (DBS..self.conns.len())
            .filter(|c| self.conns[*c].waiting().is_some())
            .collect()
    }

    fn may_unblock(&self) -> bool {
        self.paused_until
            .is_none_or(|p| Instant::now() > p + PAUSE_MARGIN)
    }

    // ---- steps ----

    fn one_step(&mut self) {
        let roll = self.rng.random_range(0..1000);
        let db = self.pick_db();
        // Some locks busier than others: queues form.
        let lock = match self.rng.random_range(0..100) {
            0..=34 => 0,
            35..=54 => 1,
            n => 2 + n as usize % (NAMES.len() - 2),
        };
        match roll {
            0..=129 => self.acquire(db, lock),
            130..=339 => self.acquire_blocking(db, lock),
            340..=409 => self.release(db, lock, true),
            410..=439 => self.release(db, lock, false),
            440..=474 => self.renew(db, lock),
            475..=489 => {
                self.query(db, args(&[b"LOCK.OWNER", NAMES[lock]]), Kind::Owner);
            }
            490..=549 => self.malformed(),
            550..=574 => self.foreign_del(db, lock),
            575..=584 => self.set_forever(db, lock),
            585..=609 => self.forced_expiry(db, lock),
            610..=619 => self.expireat_huge(db, lock),
            620..=629 => self.persist(db, lock),
            630..=659 => self.python_acquire(db, lock),
            660..=679 => self.python_release(db, lock),
            680..=684 => self.flush(),
            685..=689 => self.swapdb(),
            690..=693 => self.debug_reload(),
            694..=701 => self.resetall(db),
            702..=739 => self.client_unblock(),
            740..=759 => self.client_kill(),
            760..=769 => self.waiter_hangs_up(),
            770..=784 => self.pause(),
            785..=869 => self.pipeline(db, lock),
            870..=872 => self.demotion(),
            873..=875 => self.quiet(),
            876..=895 => self.in_multi_or_script(db, lock),
            896..=903 => self.odd_unblock(),
            904..=913 => self.rename_move_copy(db, lock),
            914..=916 => {
                self.query(0, args(&[b"CLIENT", b"UNPAUSE"]), Kind::Okay);
            }
            917..=919 => {
                let secs: &[u8] = self.pick(&[b"0".as_slice(), b"0.01", b"0.03", b"0.05"]);
                self.query(0, args(&[b"DEBUG", b"SLEEP", secs]), Kind::Okay);
            }
            920..=922 => {
                let on: &[u8] = self.pick(&[b"0".as_slice(), b"1"]);
                self.query(0, args(&[b"DEBUG", b"SET-ACTIVE-EXPIRE", on]), Kind::Okay);
            }
            923..=939 => self.sleep(),
            _ => self.idle_ping_or_close(),
        }
    }

    fn acquire(&mut self, db: usize, lock: usize) {
        let token = self.pick_token(db, lock);
        let ttl = self.pick_ttl();
        self.short_lease(db, lock, &token, ttl);
        let kind = Kind::Acquire {
            db,
            lock,
            token: token.clone(),
            ttl,
            block: None,
            check_owner: true,
        };
        self.query(db, Self::acquire_args(lock, &token, ttl, None), kind);
    }

    /// On a client connection, not waited for; sometimes more commands queued behind it.
    fn acquire_blocking(&mut self, db: usize, lock: usize) {
        let Some(c) = self.idle_client(db) else {
            return self.acquire(db, lock);
        };
        let token = if self.rng.random_bool(0.85) {
            self.fresh_token()
        } else {
            self.pick_token(db, lock)
        };
        let ttl = self.pick_ttl();
        let block = self.pick_block();
        self.short_lease(db, lock, &token, ttl);
        self.stats.waits += 1;
        let mut cmds = Vec::new();
        let mut behind = Vec::new();
        let mut check_owner = true;
        if self.rng.random_bool(0.25) {
            match self.rng.random_range(0..4) {
                0 => behind.push((args(&[b"PING"]), Kind::Pong)),
                1 => behind.push((args(&[b"LOCK.OWNER", NAMES[lock]]), Kind::Owner)),
                2 => {
                    // Its own release, right after the wait: no owner check then.
                    check_owner = false;
                    behind.push((
                        args(&[b"LOCK.RELEASE", NAMES[lock], &token]),
                        Kind::Release {
                            db,
                            lock,
                            token: token.clone(),
                        },
                    ));
                }
                _ => {
                    let (l2, t2, ttl2, b2) = (
                        self.rng.random_range(0..NAMES.len()),
                        self.fresh_token(),
                        self.rng.random_range(10..=60),
                        self.rng.random_range(5..=50),
                    );
                    behind.push((
                        Self::acquire_args(l2, &t2, ttl2, Some(b2)),
                        Kind::Acquire {
                            db,
                            lock: l2,
                            token: t2,
                            ttl: ttl2,
                            block: Some(b2),
                            check_owner: true,
                        },
                    ));
                }
            }
        }
        cmds.push((
            Self::acquire_args(lock, &token, ttl, Some(block)),
            Kind::Acquire {
                db,
                lock,
                token,
                ttl,
                block: Some(block),
                check_owner,
            },
        ));
        cmds.extend(behind);
        self.send_all(c, cmds, false);
    }

    fn release(&mut self, db: usize, lock: usize, by_owner: bool) {
        let token = match by_owner.then(|| self.owner_of(db, lock)).flatten() {
            Some(t) => t,
            None => self.pick_token(db, lock),
        };
        let kind = Kind::Release {
            db,
            lock,
            token: token.clone(),
        };
        self.query(db, args(&[b"LOCK.RELEASE", NAMES[lock], &token]), kind);
    }

    fn renew(&mut self, db: usize, lock: usize) {
        let token = match self.rng.random_bool(0.6) {
            true => self.owner_of(db, lock),
            false => None,
        }
        .unwrap_or_else(|| self.pick_token(db, lock));
        let ttl = self.pick_ttl();
        self.short_lease(db, lock, &token, ttl);
        self.query(
            db,
            args(&[
                b"LOCK.RENEW",
                NAMES[lock],
                &token,
                ttl.to_string().as_bytes(),
            ]),
            Kind::Int01,
        );
    }

    /// A malformed call: an error, and nothing changes (checked on the canary lock).
    fn malformed(&mut self) {
        let v = self.query(
            0,
            args(&[b"LOCK.ACQUIRE", CANARY, CANARY_TOKEN, b"3600"]),
            Kind::Acquire {
                db: 0,
                lock: 0,
                token: CANARY_TOKEN.to_vec(),
                ttl: 3600,
                block: None,
                check_owner: false,
            },
        );
        if !v.is_ok() {
            self.fail(format!("the canary's own acquire replied {}", v.show()));
        }
        let before = self.canary_state();
        let (n, t) = (CANARY, CANARY_TOKEN);
        let other: &[u8] = b"other";
        let bad_int: &[u8] = self.pick(&[
            b"0".as_slice(),
            b"-1",
            b"-0",
            b"007",
            b"00",
            b"1.5",
            b"",
            b" 1",
            b"1 ",
            b"+1",
            b"0x10",
            b"1e3",
            b"99999999999999999999",
            b"18446744073709551616",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"2305843009213694",
            b"\x001",
            b"1\r\n",
        ]);
        let bad_block: &[u8] = self.pick(&[
            b"-1".as_slice(),
            b"-0",
            b"007",
            b"00",
            b"",
            b"1.5",
            b"1e3",
            b" 5",
            b"2305843009213693952",
            b"9223372036854775807",
            b"18446744073709551615",
            b"99999999999999999999",
        ]);
        let tok = if self.rng.random_bool(0.5) { t } else { other };
        let a = match self.rng.random_range(0..16) {
            0 => args(&[b"LOCK.ACQUIRE", n, tok, bad_int]),
            1 => args(&[b"LOCK.ACQUIRE", n, tok, bad_int, b"BLOCK", b"0"]),
            2 => args(&[b"LOCK.ACQUIRE", n, tok, b"60", b"BLOCK", bad_block]),
            3 => args(&[b"LOCK.ACQUIRE", n, b"", b"60"]),
            4 => args(&[b"LOCK.ACQUIRE", n, b"", b"60", b"BLOCK", b"0"]),
            5 => args(&[b"LOCK.ACQUIRE", n, tok]),
            6 => args(&[b"LOCK.ACQUIRE", n, tok, b"60", b"BLOCK"]),
            7 => args(&[
                b"LOCK.ACQUIRE",
                n,
                tok,
                b"60",
                b"BLOCK",
                b"0",
                b"BLOCK",
                b"0",
            ]),
            8 => {
                let opt: &[u8] =
                    self.pick(&[b"BLOCKX".as_slice(), b"TIMEOUT", b"", b"\xff\r\n", b"NX"]);
                args(&[b"LOCK.ACQUIRE", n, tok, b"60", opt, b"0"])
            }
            9 => args(&[b"LOCK.RELEASE", n]),
            10 => args(&[b"LOCK.RELEASE", n, t, b"extra"]),
            11 => args(&[b"LOCK.RELEASE", n, b""]),
            12 => args(&[b"LOCK.RENEW", n, tok, bad_int]),
            13 => args(&[b"LOCK.RENEW", n, b"", b"60"]),
            14 => args(&[b"LOCK.OWNER"]),
            _ => {
                let which = self.rng.random_range(0..3);
                match which {
                    0 => args(&[b"LOCK.OWNER", n, b"x"]),
                    1 => args(&[b"LOCK.RESETALL", b"x"]),
                    _ => args(&[b"LOCK.RENEW", n, t]),
                }
            }
        };
        self.query(0, a, Kind::Invalid);
        let after = self.canary_state();
        if after != before {
            self.fail(format!(
                "a malformed call changed the canary lock: {before:?} -> {after:?}"
            ));
        }
    }

    /// The canary's value and absolute expiry.
    fn canary_state(&mut self) -> (V, V) {
        let key = [b"lock:".as_slice(), CANARY].concat();
        let r = self.query_all(
            0,
            vec![
                (args(&[b"GET", &key]), Kind::Any),
                (args(&[b"PEXPIRETIME", &key]), Kind::Int),
            ],
        );
        (r[0].clone(), r[1].clone())
    }

    fn lock_key(lock: usize) -> Vec<u8> {
        [b"lock:".as_slice(), NAMES[lock]].concat()
    }

    fn signal_key(lock: usize) -> Vec<u8> {
        [b"lock-signal:".as_slice(), NAMES[lock]].concat()
    }

    fn foreign_del(&mut self, db: usize, lock: usize) {
        self.foreign(Some(db), Some(lock));
        let key = Self::lock_key(lock);
        let a = match self.rng.random_range(0..5) {
            0 => args(&[b"DEL", &key]),
            1 => args(&[b"UNLINK", &key]),
            2 => args(&[b"GETDEL", &key]),
            3 => args(&[b"PEXPIREAT", &key, b"1"]),
            _ => args(&[b"EXPIRE", &key, b"-1"]),
        };
        self.query(db, a, Kind::Any);
    }

    fn set_forever(&mut self, db: usize, lock: usize) {
        self.foreign(Some(db), Some(lock));
        self.query(
            db,
            args(&[
                b"SET",
                &Self::lock_key(lock),
                b"x",
                b"PXAT",
                b"9223372036854775807",
            ]),
            Kind::Okay,
        );
    }

    fn forced_expiry(&mut self, db: usize, lock: usize) {
        self.foreign(Some(db), Some(lock));
        let ms = self.rng.random_range(10..=30u64).to_string();
        self.query(
            db,
            args(&[b"PEXPIRE", &Self::lock_key(lock), ms.as_bytes()]),
            Kind::Int,
        );
    }

    fn expireat_huge(&mut self, db: usize, lock: usize) {
        let at: &[u8] = self.pick(&[
            b"9223372036854775".as_slice(),
            b"9223372036854776",
            b"9223372036854775807",
            b"4102444800",
            b"1099511627776",
        ]);
        // Past LLONG_MAX ms Redis refuses it: an integer or an error.
        self.query(
            db,
            args(&[b"EXPIREAT", &Self::lock_key(lock), at]),
            Kind::Any,
        );
    }

    fn persist(&mut self, db: usize, lock: usize) {
        self.query(db, args(&[b"PERSIST", &Self::lock_key(lock)]), Kind::Int);
    }

    fn python_acquire(&mut self, db: usize, lock: usize) {
        let id = self.fresh_token();
        let ttl = self.rng.random_range(1..=120u64).to_string();
        self.query(
            db,
            args(&[
                b"SET",
                &Self::lock_key(lock),
                &id,
                b"NX",
                b"EX",
                ttl.as_bytes(),
            ]),
            Kind::Any,
        );
    }

    fn python_release(&mut self, db: usize, lock: usize) {
        let id = match self.rng.random_bool(0.7) {
            true => self.owner_of(db, lock),
            false => None,
        }
        .unwrap_or_else(|| self.pick_token(db, lock));
        self.foreign(Some(db), Some(lock));
        self.query(
            db,
            args(&[
                b"EVAL",
                PY_RELEASE.as_bytes(),
                b"2",
                &Self::lock_key(lock),
                &Self::signal_key(lock),
                &id,
            ]),
            Kind::Int,
        );
    }

    fn flush(&mut self) {
        self.foreign(None, None);
        let (db, a) = match self.rng.random_range(0..4) {
            0 => (0, args(&[b"FLUSHALL"])),
            1 => (0, args(&[b"FLUSHALL", b"ASYNC"])),
            2 => (0, args(&[b"FLUSHDB"])),
            _ => (1, args(&[b"FLUSHDB", b"SYNC"])),
        };
        self.query(db, a, Kind::Okay);
    }

    fn swapdb(&mut self) {
        self.foreign(None, None);
        self.query(0, args(&[b"SWAPDB", b"0", b"1"]), Kind::Okay);
    }

    fn debug_reload(&mut self) {
        // Keeps every key with its expiry: no mark.
        self.query(0, args(&[b"DEBUG", b"RELOAD"]), Kind::Okay);
    }

    fn resetall(&mut self, db: usize) {
        self.foreign(Some(db), None);
        self.query(db, args(&[b"LOCK.RESETALL"]), Kind::Int);
    }

    fn unblock_args(&mut self, c: usize) -> (Vec<Vec<u8>>, Kind) {
        let (target, _, _) = self.conns[c].unblock_target().unwrap();
        let id = self.conns[c].id.to_string();
        let (client, unblock, timeout, err): (&[u8], &[u8], &[u8], &[u8]) =
            if self.rng.random_bool(0.8) {
                (b"CLIENT", b"UNBLOCK", b"TIMEOUT", b"ERROR")
            } else {
                (b"client", b"Unblock", b"timeout", b"error")
            };
        let (a, error) = match self.rng.random_range(0..3) {
            0 => (args(&[client, unblock, id.as_bytes()]), false),
            1 => (args(&[client, unblock, id.as_bytes(), timeout]), false),
            _ => (args(&[client, unblock, id.as_bytes(), err]), true),
        };
        self.unblock_sent.entry(target).or_default().push(error);
        (a, Kind::Unblock { target, error })
    }

    fn client_unblock(&mut self) {
        let waiting: Vec<usize> = (DBS..self.conns.len())
            .filter(|c| self.conns[*c].unblock_target().is_some())
            .collect();
        if waiting.is_empty() || !self.may_unblock() {
            return self.sleep();
        }
        let c = self.pick(&waiting);
        let (a, kind) = self.unblock_args(c);
        self.query(0, a, kind);
    }

    /// `CLIENT UNBLOCK` of a client that waits for nothing (0), or a waiter's id in a form the
    /// server does not read as an id (its error or 0; the waiter must go on waiting).
    fn odd_unblock(&mut self) {
        let idle: Vec<usize> = (DBS..self.conns.len())
            .filter(|c| self.conns[*c].idle())
            .collect();
        let waiting = self.waiting_clients();
        if self.rng.random_bool(0.5) && !idle.is_empty() {
            let c = self.pick(&idle);
            let id = self.conns[c].id.to_string();
            let how: &[u8] = self.pick(&[b"TIMEOUT".as_slice(), b"ERROR"]);
            self.query(
                0,
                args(&[b"CLIENT", b"UNBLOCK", id.as_bytes(), how]),
                Kind::Zero,
            );
        } else if !waiting.is_empty() && self.may_unblock() {
            let c = self.pick(&waiting);
            let id = self.conns[c].id;
            let a = match self.rng.random_range(0..6) {
                0 => args(&[b"CLIENT", b"UNBLOCK", format!("0{id}").as_bytes()]),
                1 => args(&[b"CLIENT", b"UNBLOCK", format!("+{id}").as_bytes()]),
                2 => args(&[b"CLIENT", b"UNBLOCK", format!(" {id}").as_bytes()]),
                3 => args(&[b"CLIENT", b"UNBLOCK", format!("-{id}").as_bytes()]),
                4 => args(&[b"CLIENT", b"UNBLOCK", format!("{id}.0").as_bytes()]),
                _ => args(&[
                    b"CLIENT",
                    b"UNBLOCK",
                    id.to_string().as_bytes(),
                    b"TIMEOUT",
                    b"x",
                ]),
            };
            self.query(0, a, Kind::Any);
        } else {
            self.sleep();
        }
    }

    /// `LOCK.ACQUIRE ... BLOCK` where it must not block: in MULTI (after a DEL of the lock,
    /// or with a `CLIENT UNBLOCK` of a waiter) or in a script: OK or nil at once.
    fn in_multi_or_script(&mut self, db: usize, lock: usize) {
        let token = self.pick_token(db, lock);
        let ttl = self.pick_ttl();
        let block = self.pick_block();
        self.short_lease(db, lock, &token, ttl);
        let acquire = Kind::Acquire {
            db,
            lock,
            token: token.clone(),
            ttl,
            block: None,
            check_owner: true,
        };
        if self.rng.random_bool(0.3) {
            let script =
                b"return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], ARGV[2], 'BLOCK', ARGV[3])";
            self.query(
                db,
                args(&[
                    b"EVAL",
                    script,
                    b"1",
                    NAMES[lock],
                    &token,
                    ttl.to_string().as_bytes(),
                    block.to_string().as_bytes(),
                ]),
                acquire,
            );
            return;
        }
        let mut queued: Vec<(Vec<Vec<u8>>, Kind)> = Vec::new();
        match self.rng.random_range(0..3) {
            0 => {
                self.foreign(Some(db), Some(lock));
                queued.push((args(&[b"DEL", &Self::lock_key(lock)]), Kind::Int));
            }
            1 => {
                let waiting: Vec<usize> = (DBS..self.conns.len())
                    .filter(|c| self.conns[*c].unblock_target().is_some())
                    .collect();
                if !waiting.is_empty() && self.may_unblock() {
                    let c = self.pick(&waiting);
                    queued.push(self.unblock_args(c));
                }
            }
            _ => {}
        }
        queued.push((Self::acquire_args(lock, &token, ttl, Some(block)), acquire));
        let mut cmds = vec![(args(&[b"MULTI"]), Kind::Okay)];
        let kinds = queued.iter().map(|(_, k)| k.clone()).collect();
        for (a, _) in queued {
            cmds.push((a, Kind::Queued));
        }
        cmds.push((args(&[b"EXEC"]), Kind::Exec(kinds)));
        self.query_all(db, cmds);
    }

    /// `RENAME`/`MOVE`/`COPY ... REPLACE` of a lock's key: it leaves one lock (or database)
    /// and lands on another.
    fn rename_move_copy(&mut self, db: usize, lock: usize) {
        let other = self.rng.random_range(0..NAMES.len());
        let (from, to) = (Self::lock_key(lock), Self::lock_key(other));
        self.foreign(Some(db), Some(lock));
        let a = match self.rng.random_range(0..3) {
            0 => {
                self.foreign(Some(db), Some(other));
                args(&[b"RENAME", &from, &to])
            }
            1 => {
                self.foreign(None, Some(lock));
                args(&[b"MOVE", &from, (1 - db).to_string().as_bytes()])
            }
            _ => {
                self.foreign(None, Some(other));
                let to_db = self.rng.random_range(0..DBS).to_string();
                args(&[b"COPY", &from, &to, b"DB", to_db.as_bytes(), b"REPLACE"])
            }
        };
        // An error when the key is missing (RENAME) or the same (COPY onto itself).
        self.query(db, a, Kind::Any);
    }

    fn kill_args(&mut self, c: usize) -> Vec<Vec<u8>> {
        self.conns[c].fate = Fate::Killed;
        self.stats.kills += 1;
        let id = self.conns[c].id.to_string();
        args(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()])
    }

    fn client_kill(&mut self) {
        let mut targets = self.waiting_clients();
        if targets.is_empty() || self.rng.random_bool(0.2) {
            targets = (DBS..self.conns.len())
                .filter(|c| self.conns[*c].open() && self.conns[*c].fate == Fate::Live)
                .collect();
        }
        if targets.is_empty() {
            return self.sleep();
        }
        let c = self.pick(&targets);
        let a = self.kill_args(c);
        self.query(0, a, Kind::Int);
    }

    fn waiter_hangs_up(&mut self) {
        let waiting = self.waiting_clients();
        if waiting.is_empty() {
            return self.sleep();
        }
        let c = self.pick(&waiting);
        self.hang_up(c);
    }

    fn pause(&mut self) {
        let ms = self.rng.random_range(20..=100u64);
        let mode: &[u8] = self.pick(&[b"WRITE".as_slice(), b"ALL"]);
        self.stats.pauses += 1;
        self.query(
            0,
            args(&[b"CLIENT", b"PAUSE", ms.to_string().as_bytes(), mode]),
            Kind::Okay,
        );
        let until = Instant::now() + Duration::from_millis(ms);
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// A release (or foreign delete) and an unblock or kill of one of the lock's waiters, in
    /// one write: one event-loop pass on the server.
    fn pipeline(&mut self, db: usize, lock: usize) {
        let waiting: Vec<usize> = self
            .waiting_clients()
            .into_iter()
            .filter(|c| self.conns[*c].db == db)
            .collect();
        if waiting.is_empty() {
            return self.acquire_blocking(db, lock);
        }
        let c = self.pick(&waiting);
        let (_, _, lock) = self.conns[c].waiting().unwrap();
        let owner = self.owner_of(db, lock);
        let release = match owner {
            Some(t) if self.rng.random_bool(0.8) => (
                args(&[b"LOCK.RELEASE", NAMES[lock], &t]),
                Kind::Release { db, lock, token: t },
            ),
            _ => {
                self.foreign(Some(db), Some(lock));
                (args(&[b"DEL", &Self::lock_key(lock)]), Kind::Int)
            }
        };
        let unblock = self.may_unblock()
            && self.conns[c].unblock_target().is_some()
            && self.rng.random_bool(0.6);
        let other = if unblock {
            self.unblock_args(c)
        } else {
            (self.kill_args(c), Kind::Int)
        };
        let mut cmds = if self.rng.random_bool(0.7) {
            vec![release, other]
        } else {
            vec![other, release]
        };
        if self.rng.random_bool(0.3) {
            // And someone trying to take it in the same pass: must not jump the queue, but
            // the test only checks the reply's shape.
            let t = self.fresh_token();
            cmds.push((
                Self::acquire_args(lock, &t, 30, None),
                Kind::Acquire {
                    db,
                    lock,
                    token: t,
                    ttl: 30,
                    block: None,
                    check_owner: true,
                },
            ));
        }
        self.query_all(db, cmds);
    }

    /// `REPLICAOF` a plain server, wait for the link, `REPLICAOF NO ONE`: every waiter gets
    /// `-UNBLOCKED` and is disconnected; the data is the (empty) primary's.
    fn demotion(&mut self) {
        if let Some(p) = self.paused_until {
            // A client held by a pause would run its command on the replica: keep it simple.
            let now = Instant::now();
            if p + PAUSE_MARGIN > now {
                std::thread::sleep(p + PAUSE_MARGIN - now);
            }
        }
        if self.primary.is_none() {
            self.primary = Some(Server::with(Options {
                module: false,
                tcp: true,
                ..Options::default()
            }));
        }
        let port = self.primary.as_ref().unwrap().port.unwrap().to_string();
        self.stats.demotions += 1;
        for c in DBS..self.conns.len() {
            let conn = &mut self.conns[c];
            if conn.open() && conn.fate == Fate::Live && !conn.out.is_empty() {
                conn.fate = Fate::Doomed;
            }
        }
        self.foreign(None, None);
        self.demoted_before = u64::MAX;
        self.query(
            0,
            args(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]),
            Kind::Okay,
        );
        let start = Instant::now();
        loop {
            let info = self.query(0, args(&[b"INFO", b"replication"]), Kind::Any);
            if let V::Bulk(Some(b)) = &info {
                if String::from_utf8_lossy(b).contains("master_link_status:up") {
                    break;
                }
            }
            if start.elapsed() > DEADLINE {
                self.fail(format!("the replica never linked: {}", info.show()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.query(0, args(&[b"REPLICAOF", b"NO", b"ONE"]), Kind::Okay);
        self.demoted_before = self.seq + 1;
        self.foreign(None, None);
    }

    fn sleep(&mut self) {
        let ms = self.rng.random_range(1..=30u64);
        self.note(format!("sleep {ms} ms"));
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// Nothing for a while but reading replies: every waiter whose lock is free gets it at
    /// once (busy locks hide a lost wake-up: the next acquire serves the queue first).
    fn quiet(&mut self) {
        if let Some(p) = self.paused_until {
            let now = Instant::now();
            if p + PAUSE_MARGIN > now {
                std::thread::sleep(p + PAUSE_MARGIN - now);
            }
        }
        self.note("quiet".into());
        self.free_while_waiting.clear();
        let start = Instant::now();
        while start.elapsed() < LOST_WAKEUP_QUIET * 6 / 5 {
            self.poll();
            self.check_lost_wakeups(LOST_WAKEUP_QUIET);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn idle_ping_or_close(&mut self) {
        let idle: Vec<usize> = (DBS..self.conns.len())
            .filter(|c| self.conns[*c].idle())
            .collect();
        if idle.is_empty() {
            return self.sleep();
        }
        let c = self.pick(&idle);
        if self.rng.random_bool(0.5) {
            self.send(c, args(&[b"PING"]), Kind::Pong);
        } else {
            self.hang_up(c);
        }
    }

    // ---- the run ----

    fn after_step(&mut self) {
        self.poll();
        self.stats.waiting_sum += self.waiting_clients().len();
        self.ping_server();
        self.check_overdue();
        self.check_lost_wakeups(LOST_WAKEUP);
    }

    /// Unpause; then free every lock of both databases until nobody waits; every command must
    /// be answered within `DEADLINE`, every connection still answer PING.
    fn finish(&mut self) {
        self.step += 1;
        self.note("finish".into());
        self.query(0, args(&[b"CLIENT", b"UNPAUSE"]), Kind::Okay);
        self.query(0, args(&[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"1"]), Kind::Okay);
        self.paused_until = None;
        self.quiet();
        let start = Instant::now();
        loop {
            for db in 0..DBS {
                self.query(db, args(&[b"LOCK.RESETALL"]), Kind::Int);
            }
            self.query(0, args(&[b"FLUSHALL"]), Kind::Okay);
            self.foreign(None, None);
            std::thread::sleep(Duration::from_millis(2));
            self.poll();
            let outstanding: usize = (DBS..self.conns.len())
                .map(|c| self.conns[c].out.len() + self.conns[c].ping_due as usize)
                .sum();
            let killed_open = (DBS..self.conns.len())
                .any(|c| self.conns[c].open() && self.conns[c].fate != Fate::Live);
            if outstanding == 0 && !killed_open {
                break;
            }
            if start.elapsed() > DEADLINE {
                self.fail(format!(
                    "{outstanding} replies still missing (or killed connections still open) {DEADLINE:?} after the end"
                ));
            }
        }
        for c in DBS..self.conns.len() {
            if self.conns[c].open() {
                self.query(c, args(&[b"PING"]), Kind::Pong);
            }
        }
        let info = self.query(0, args(&[b"INFO", b"clients"]), Kind::Any);
        let blocked = match &info {
            V::Bulk(Some(b)) => String::from_utf8_lossy(b).lines().find_map(|l| {
                l.strip_prefix("blocked_clients:")
                    .map(|v| v.trim().to_string())
            }),
            _ => None,
        };
        if blocked.as_deref() != Some("0") {
            self.fail(format!("blocked clients at the end: {blocked:?}"));
        }
        let log = self.server.log();
        for bad in [
            "ASSERTION",
            "crashed",
            "Guru Meditation",
            "rlock: internal error",
        ] {
            if log.contains(bad) {
                self.fail(format!("the server log has {bad:?}"));
            }
        }
    }
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[test]
fn chaos_keeps_every_invariant() {
    let steps = env_u64("RLOCK_CHAOS_STEPS").unwrap_or(1000) as usize;
    let seeds: Vec<u64> = match env_u64("RLOCK_CHAOS_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("RLOCK_CHAOS_SEEDS").unwrap_or(3)).collect(),
    };
    for seed in seeds {
        let started = Instant::now();
        let mut chaos = Chaos::new(seed);
        for step in 1..=steps {
            chaos.step = step;
            chaos.one_step();
            chaos.after_step();
        }
        chaos.stats.steps = steps;
        chaos.finish();
        eprintln!(
            "chaos seed {seed}: {:?} in {:?}",
            chaos.stats,
            started.elapsed()
        );
    }
}
