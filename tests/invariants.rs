//! The promises, checked after every step of a random run (PROTOCOL.md 1-4): a ledger of every
//! grant the clients were told of, and what the server says.
//!
//! Actors on their own connections: module clients (`LOCK.ACQUIRE` with and without `BLOCK`,
//! `FENCE`, `BIND`, a server-made token `*`, tokens shared by several connections so that
//! same-token groups form), python-redis-lock clients (its `SET NX EX`, `BLPOP` on the signal
//! list, its release script), acquires inside `MULTI` and `EVAL`, and from a control
//! connection releases, wrong-token releases, a release and a `CLIENT KILL` of a waiter in one
//! write (one event-loop pass), kills of bound holders, `CLIENT UNBLOCK`, `DEL`, `FLUSHALL`,
//! `CLIENT PAUSE WRITE` with a kill and a release held back by it, the eviction of every key
//! (locks and fence counters) under `maxmemory`, and a user whose ACL allows one lock only.
//! Leases are long: a lock ends only by a step the ledger sees.
//!
//! After every step, once every outstanding reply is in or its client is blocked:
//! - **one holder**: a client told `OK` (or a python `SET NX` that succeeded) for a name while
//!   another token's hold of it has not ended is a failure; the ledger's holder is
//!   `LOCK.OWNER`; a release by a token replies 1 exactly when the ledger says it holds;
//! - **fences never repeat**: every fence replied for a name is greater than every fence
//!   replied before for it, except the same fence to the holder's token while it holds;
//! - **one reply**: a reply on a connection with nothing outstanding is a failure;
//! - at the end every holder lets go until nobody waits: every waiter, module or python, gets
//!   the lock within the deadline (no lost wake-up), and `INFO rlock`'s gauges
//!   (`waiters`, `locks_with_waiters`, `bound_locks`) and `blocked_clients` are back to 0.
//!
//! `RLOCK_INVARIANT_STEPS` (default 300) and `RLOCK_INVARIANT_SEEDS` (default 2) set the length
//! (`make chaos` runs it longer); a failure names the seed and step.

mod common;
use common::raw::*;
use common::*;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

const NAMES: [&str; 3] = ["i0", "i1", "i2"];
const TOKENS: [&str; 4] = ["ta", "tb", "tc", "td"];
const ACTORS: usize = 10;
/// python-redis-lock 4.0.1's release script (KEYS: lock, signal; ARGV: id, signal_expire ms).
const PY_RELEASE: &str = "if redis.call(\"get\", KEYS[1]) ~= ARGV[1] then return 1 else \
    redis.call(\"del\", KEYS[2]) redis.call(\"lpush\", KEYS[2], 1) \
    redis.call(\"pexpire\", KEYS[2], ARGV[2]) redis.call(\"del\", KEYS[1]) return 0 end";

#[derive(Clone, Debug)]
enum St {
    Idle,
    /// `LOCK.ACQUIRE` sent, reply not read.
    Acquiring {
        name: usize,
        token: Option<String>,
        fence: bool,
        bind: bool,
        /// When it was sent: a same-token group is served in this order.
        seq: u64,
    },
    /// python-redis-lock's `SET lock:<n> <id> NX EX` sent.
    PySet {
        name: usize,
        id: String,
    },
    /// python-redis-lock's `BLPOP lock-signal:<n> 0` sent.
    PyWait {
        name: usize,
        id: String,
        /// A `FLUSHALL` came since: it signals nobody (nor would it without the module), so
        /// this waiter is woken by hand at the end.
        flushed: bool,
    },
}

struct Actor {
    c: Raw,
    id: String,
    st: St,
}

#[derive(Clone, Debug)]
struct Hold {
    token: String,
    python: bool,
    fence: Option<i64>,
    /// The connection the hold is bound to (BIND), if any.
    bound: Option<usize>,
    /// Its bound connection was killed: the hold may have ended.
    may_have_ended: bool,
    /// The acquire that decided the binding (the last one: the binding follows it).
    seq: u64,
}

struct Run {
    /// A connection of a user who may use lock `i0` only.
    limited: Raw,
    s: Server,
    ctl: Raw,
    rng: StdRng,
    actors: Vec<Actor>,
    holds: Vec<Option<Hold>>,
    max_fence: Vec<i64>,
    py_ids: u64,
    seq: u64,
    /// Keys may be evicted now: a hold may end at any moment, unseen.
    evicting: bool,
    /// The holds this step's `DEL`/`FLUSHALL` ended, as the server saw them when it ran: a
    /// grant to one of them read afterwards was made before (the timer hands locks over at any
    /// moment), and is over.
    ended_now: Vec<(usize, String)>,
    /// The holds told during an eviction step (their order is not known).
    evicted_window: Vec<(usize, Hold)>,
    /// The fences replied during an eviction step.
    window_fences: Vec<(usize, i64, String)>,
    step: usize,
    seed: u64,
    log: Vec<String>,
}

fn fail(run: &Run, what: &str) -> ! {
    let tail: Vec<&String> = run.log.iter().rev().take(25).collect();
    panic!(
        "seed {} step {}: {what}\nlast steps (newest first):\n  {}",
        run.seed,
        run.step,
        tail.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

fn connect(s: &Server) -> Actor {
    let mut c = Raw::connect(s);
    let id = c.call(&["CLIENT", "ID"]).int().to_string();
    Actor {
        c,
        id,
        st: St::Idle,
    }
}

impl Run {
    fn new(seed: u64) -> Run {
        let s = Server::start();
        let ctl = Raw::connect(&s);
        let actors = (0..ACTORS).map(|_| connect(&s)).collect();
        let mut ctl = ctl;
        let r = ctl.call(&[
            "ACL",
            "SETUSER",
            "limited",
            "on",
            ">pw",
            "~lock:i0",
            "~lock-signal:i0",
            "~lock-fence:i0",
            "+@all",
        ]);
        assert_eq!(r, R::ok());
        let mut limited = Raw::connect(&s);
        assert_eq!(limited.call(&["AUTH", "limited", "pw"]), R::ok());
        Run {
            limited,
            s,
            ctl,
            rng: StdRng::seed_from_u64(seed),
            actors,
            holds: vec![None; NAMES.len()],
            max_fence: vec![0; NAMES.len()],
            py_ids: 0,
            seq: 0,
            evicting: false,
            ended_now: Vec::new(),
            evicted_window: Vec::new(),
            window_fences: Vec::new(),
            step: 0,
            seed,
            log: Vec::new(),
        }
    }

    fn note(&mut self, s: String) {
        if std::env::var_os("RLOCK_INVARIANT_TRACE").is_some() {
            eprintln!("[{}] {s}", self.step);
        }
        self.log.push(format!("[{}] {s}", self.step));
        if self.log.len() > 200 {
            self.log.drain(..100);
        }
    }

    fn outstanding(&self) -> usize {
        self.actors
            .iter()
            .filter(|a| !matches!(a.st, St::Idle))
            .count()
    }

    /// `token` was told it holds `name` (fence `fence`; bound to actor `bound`) by the acquire
    /// sent as `seq`.
    fn granted(
        &mut self,
        name: usize,
        token: &str,
        python: bool,
        fence: Option<i64>,
        bound: Option<usize>,
        seq: u64,
    ) {
        if self.ended_now.iter().any(|(n, t)| *n == name && t == token) {
            self.note(format!(
                "  -> {token:?} held {} until this step ended it",
                NAMES[name]
            ));
            return;
        }
        let held = self.holds[name].clone();
        if let Some(h) = &held {
            if h.token != token && !h.may_have_ended && !self.evicting {
                fail(
                    self,
                    &format!(
                        "two holders of {}: {:?} was told it holds it while {:?} does",
                        NAMES[name], token, h.token
                    ),
                );
            }
        }
        let same = held
            .as_ref()
            .filter(|h| h.token == token && !h.may_have_ended);
        if let (Some(f), true) = (fence, self.evicting) {
            // Grants while keys are evicted are read out of order: checked at the end.
            self.window_fences.push((name, f, token.to_string()));
        } else if let Some(f) = fence {
            let retry = same.is_some_and(|h| h.fence == Some(f));
            if !retry && f <= self.max_fence[name] {
                fail(
                    self,
                    &format!(
                        "fence {f} for {} to {token:?}: not above {} issued before",
                        NAMES[name], self.max_fence[name]
                    ),
                );
            }
            self.max_fence[name] = self.max_fence[name].max(f);
        }
        let fence = fence.or_else(|| same.and_then(|h| h.fence));
        // An earlier member of a group answered after a later one: the later one decided.
        let (bound, seq) = match same {
            Some(h) if h.seq > seq => (h.bound, h.seq),
            _ => (bound, seq),
        };
        self.note(format!(
            "  -> {token:?} holds {} (fence {fence:?}, bound {bound:?})",
            NAMES[name]
        ));
        let hold = Hold {
            token: token.to_string(),
            python,
            fence,
            bound,
            may_have_ended: false,
            seq,
        };
        if self.evicting {
            self.evicted_window.push((name, hold.clone()));
        }
        self.holds[name] = Some(hold);
    }

    /// An acquire's reply, for actor `i` (`block`: it may have waited).
    #[allow(clippy::too_many_arguments)]
    fn acquire_reply(
        &mut self,
        i: usize,
        name: usize,
        token: Option<String>,
        fence: bool,
        bind: bool,
        seq: u64,
        r: R,
    ) {
        let (given, f) = match (&r, fence, &token) {
            (R::Status(s), false, Some(_)) if s == "OK" => (token.clone(), None),
            (R::Bulk(Some(t)), false, None) => {
                (Some(String::from_utf8_lossy(t).into_owned()), None)
            }
            (R::Int(f), true, Some(_)) => (token.clone(), Some(*f)),
            (R::Array(Some(v)), true, None) => match &v[..] {
                [R::Bulk(Some(t)), R::Int(f)] => {
                    (Some(String::from_utf8_lossy(t).into_owned()), Some(*f))
                }
                _ => fail(
                    self,
                    &format!("actor {i}: a [token, fence] reply of another shape: {r:?}"),
                ),
            },
            (R::Bulk(None), _, _) => (None, None),
            (R::Error(e), _, _) if e.starts_with("UNBLOCKED") => (None, None),
            // Sent during a pause, run under the eviction step's maxmemory.
            (R::Error(e), _, _) if e.starts_with("OOM") => (None, None),
            _ => fail(
                self,
                &format!(
                    "actor {i}: acquire of {} ({token:?}, fence {fence}) replied {r:?}",
                    NAMES[name]
                ),
            ),
        };
        self.note(format!(
            "actor {i} acquire {} {token:?} -> {r:?}",
            NAMES[name]
        ));
        if let Some(t) = given {
            self.granted(name, &t, false, f, bind.then_some(i), seq);
        }
    }

    /// Read what has come in, on every connection.
    fn drain(&mut self) {
        // Replies that came in together are read in the order the server gave their fences
        // (a hand-over made by a later command's own acquire comes before its fence); the rest
        // in the actors' order.
        let mut came = Vec::new();
        for i in 0..self.actors.len() {
            loop {
                match self.actors[i].c.poll() {
                    Ok(r) => came.push((i, r)),
                    Err(End::Quiet) => break,
                    Err(End::Closed) => fail(self, &format!("actor {i}: connection closed")),
                }
            }
        }
        came.sort_by_key(|(_, r)| match r {
            R::Int(f) => *f,
            R::Array(Some(v)) => match v.last() {
                Some(R::Int(f)) => *f,
                _ => 0,
            },
            _ => 0,
        });
        for (i, r) in came {
            {
                let st = std::mem::replace(&mut self.actors[i].st, St::Idle);
                match st {
                    St::Idle => fail(
                        self,
                        &format!("actor {i}: a reply with nothing outstanding: {r:?}"),
                    ),
                    St::Acquiring {
                        name,
                        token,
                        fence,
                        bind,
                        seq,
                    } => self.acquire_reply(i, name, token, fence, bind, seq, r),
                    St::PySet { name, id } => {
                        self.note(format!(
                            "actor {i} python SET {} {id} -> {r:?}",
                            NAMES[name]
                        ));
                        if r == R::ok() {
                            self.seq += 1;
                            self.granted(name, &id, true, None, None, self.seq);
                        } else if r == R::nil() {
                            let signal = format!("lock-signal:{}", NAMES[name]);
                            self.actors[i].c.send(&[&["BLPOP", signal.as_str(), "0"]]);
                            self.actors[i].st = St::PyWait {
                                name,
                                id,
                                flushed: false,
                            };
                        } else {
                            fail(self, &format!("actor {i}: python SET NX replied {r:?}"));
                        }
                    }
                    St::PyWait { name, id, .. } => {
                        self.note(format!(
                            "actor {i} python BLPOP {} woken: {r:?}",
                            NAMES[name]
                        ));
                        self.py_set(i, name, id);
                    }
                }
            }
        }
    }

    fn py_set(&mut self, i: usize, name: usize, id: String) {
        let key = format!("lock:{}", NAMES[name]);
        self.actors[i]
            .c
            .send(&[&["SET", key.as_str(), id.as_str(), "NX", "EX", "600"]]);
        self.actors[i].st = St::PySet { name, id };
    }

    /// Until every outstanding command is answered or its client blocked.
    fn settle(&mut self) {
        let start = Instant::now();
        loop {
            self.drain();
            let blocked = info_field_raw(&mut self.ctl, "clients", "blocked_clients");
            if blocked == self.outstanding() as i64 {
                self.drain();
                if blocked == self.outstanding() as i64 {
                    return;
                }
            }
            if start.elapsed() > DEADLINE {
                fail(
                    self,
                    &format!(
                        "not settled: {blocked} blocked, {} outstanding",
                        self.outstanding()
                    ),
                );
            }
        }
    }

    /// The ledger agrees with `LOCK.OWNER`. The timer may hand a lock over at any moment (a
    /// python-redis-lock turn or a BLOCK time ending): a grant whose reply is on its way is
    /// waited for, briefly; an owner never told stays a failure.
    fn check_owners(&mut self) {
        let start = Instant::now();
        loop {
            match self.disagreement() {
                None => return,
                Some(what) if start.elapsed() > DEADLINE / 10 => fail(self, &what),
                Some(_) => self.settle(),
            }
        }
    }

    fn disagreement(&mut self) -> Option<String> {
        for (n, name) in NAMES.iter().enumerate() {
            let owner = self.ctl.owner(name);
            match self.holds[n].clone() {
                Some(h) if h.may_have_ended => {
                    if owner.as_deref() != Some(h.token.as_str()) {
                        if owner.is_some() {
                            return Some(format!("{} owned by {owner:?}, never told", name));
                        }
                        self.holds[n] = None;
                    }
                }
                Some(h) => {
                    if owner.as_deref() != Some(h.token.as_str()) {
                        return Some(format!(
                            "{}: told {:?} holds it, LOCK.OWNER says {owner:?}",
                            name, h.token
                        ));
                    }
                }
                None => {
                    if owner.is_some() {
                        return Some(format!(
                            "{}: nobody was told, LOCK.OWNER says {owner:?}",
                            name
                        ));
                    }
                }
            }
        }
        None
    }

    /// `replies` starts with the `GET lock:<name>` run in the same `MULTI` as what ended it.
    fn ended_by(&mut self, name: usize, replies: &[R]) {
        if let Some(R::Bulk(Some(t))) = replies.first() {
            let token = String::from_utf8_lossy(t).into_owned();
            self.note(format!("  {} was {token:?}'s", NAMES[name]));
            self.ended_now.push((name, token));
        }
    }

    fn idle(&mut self) -> Option<usize> {
        let idle: Vec<usize> = (0..self.actors.len())
            .filter(|&i| matches!(self.actors[i].st, St::Idle))
            .collect();
        (!idle.is_empty()).then(|| idle[self.rng.random_range(0..idle.len())])
    }

    fn waiting_on(&self, name: usize) -> Vec<usize> {
        (0..self.actors.len())
            .filter(|&i| matches!(&self.actors[i].st, St::Acquiring { name: n, .. } if *n == name))
            .collect()
    }

    /// The release the holder of `name` would send (module or python), and the reply expected.
    fn release_cmd(&mut self, name: usize, h: &Hold) -> (Vec<String>, R) {
        if h.python {
            let cmd = vec![
                "EVAL".into(),
                PY_RELEASE.into(),
                "2".into(),
                format!("lock:{}", NAMES[name]),
                format!("lock-signal:{}", NAMES[name]),
                h.token.clone(),
                "1000".into(),
            ];
            (cmd, R::Int(0))
        } else {
            let cmd = vec!["LOCK.RELEASE".into(), NAMES[name].into(), h.token.clone()];
            (cmd, R::Int(1))
        }
    }

    fn release(&mut self, name: usize) {
        let Some(h) = self.holds[name].clone() else {
            return;
        };
        let (cmd, want) = self.release_cmd(name, &h);
        let r = self.ctl.call(&cmd);
        self.note(format!("release {} by {:?} -> {r:?}", NAMES[name], h.token));
        if r != want && !h.may_have_ended {
            fail(self, &format!("the holder's release replied {r:?}"));
        }
        self.holds[name] = None;
    }

    /// Kill actor `i` (its replies are never read) and put a fresh connection in its place.
    fn replace(&mut self, i: usize) {
        for h in self.holds.iter_mut().flatten() {
            if h.bound == Some(i) {
                h.may_have_ended = true;
                h.bound = None;
            }
        }
        self.actors[i] = connect(&self.s);
    }

    fn step(&mut self) {
        self.ended_now.clear();
        let name = self.rng.random_range(0..NAMES.len());
        let roll = self.rng.random_range(0..112);
        match roll {
            0..=39 => {
                let Some(i) = self.idle() else { return };
                let token = (self.rng.random_range(0..5) > 0)
                    .then(|| TOKENS[self.rng.random_range(0..TOKENS.len())].to_string());
                let fence = self.rng.random_bool(0.4);
                let bind = self.rng.random_bool(0.3);
                let block = match self.rng.random_range(0..10) {
                    0..=5 => Some("0"),
                    6..=7 => Some("20"),
                    _ => None,
                };
                let mut cmd: Vec<&str> = vec![
                    "LOCK.ACQUIRE",
                    NAMES[name],
                    token.as_deref().unwrap_or("*"),
                    "600",
                ];
                if let Some(ms) = block {
                    cmd.extend(["BLOCK", ms]);
                }
                if fence {
                    cmd.push("FENCE");
                }
                if bind {
                    cmd.push("BIND");
                }
                self.note(format!("actor {i}: {}", cmd.join(" ")));
                self.actors[i].c.send(&[&cmd]);
                self.seq += 1;
                self.actors[i].st = St::Acquiring {
                    name,
                    token,
                    fence,
                    bind,
                    seq: self.seq,
                };
            }
            40..=54 => self.release(name),
            55..=61 => {
                // A release and the kill of a waiter (maybe the next in line) in one pass.
                let Some(h) = self.holds[name].clone() else {
                    return;
                };
                let waiting = self.waiting_on(name);
                if waiting.is_empty() {
                    return;
                }
                let k = waiting[self.rng.random_range(0..waiting.len().min(2))];
                let (cmd, want) = self.release_cmd(name, &h);
                let id = self.actors[k].id.clone();
                self.note(format!(
                    "release {} by {:?} + CLIENT KILL actor {k}",
                    NAMES[name], h.token
                ));
                self.ctl.send(&[
                    &cmd[..],
                    &["CLIENT".to_string(), "KILL".into(), "ID".into(), id][..],
                ]);
                let r = self.ctl.read("release");
                let killed = self.ctl.read("kill");
                if (r != want && !h.may_have_ended) || killed != R::Int(1) {
                    fail(self, &format!("release + kill replied {r:?}, {killed:?}"));
                }
                self.holds[name] = None;
                self.replace(k);
            }
            62..=66 => {
                // Kill the connection a hold is bound to (or any idle one).
                let bound = self.holds.iter().flatten().find_map(|h| h.bound);
                let Some(i) = bound.or_else(|| self.idle()) else {
                    return;
                };
                if !matches!(self.actors[i].st, St::Idle) {
                    return;
                }
                let id = self.actors[i].id.clone();
                self.note(format!("CLIENT KILL actor {i}"));
                let r = self.ctl.call(&["CLIENT", "KILL", "ID", id.as_str()]);
                if r != R::Int(1) {
                    fail(self, &format!("kill replied {r:?}"));
                }
                self.replace(i);
            }
            67..=70 => {
                let r = self.ctl.call(&["LOCK.RELEASE", NAMES[name], "nobody"]);
                if r != R::Int(0) {
                    fail(
                        self,
                        &format!("a release by a token that holds nothing replied {r:?}"),
                    );
                }
            }
            71..=78 => {
                let Some(i) = self.idle() else { return };
                self.py_ids += 1;
                let id = format!("py{}", self.py_ids);
                self.note(format!("actor {i}: python acquire {} as {id}", NAMES[name]));
                self.py_set(i, name, id);
            }
            79..=82 => {
                let Some(i) = self.idle() else { return };
                let token = TOKENS[self.rng.random_range(0..TOKENS.len())].to_string();
                let fence = self.rng.random_bool(0.5);
                let mut inner: Vec<&str> =
                    vec!["LOCK.ACQUIRE", NAMES[name], &token, "600", "BLOCK", "0"];
                if fence {
                    inner.push("FENCE");
                }
                self.note(format!("actor {i}: MULTI {} EXEC", inner.join(" ")));
                self.actors[i]
                    .c
                    .send(&[&["MULTI"][..], &inner[..], &["EXEC"][..]]);
                let c = &mut self.actors[i].c;
                let (a, b, e) = (c.read("MULTI"), c.read("queued"), c.read("EXEC"));
                let r = match e {
                    R::Array(Some(mut v))
                        if a == R::ok() && b == R::Status("QUEUED".into()) && v.len() == 1 =>
                    {
                        v.remove(0)
                    }
                    other => fail(self, &format!("MULTI/EXEC replied {a:?} {b:?} {other:?}")),
                };
                self.seq += 1;
                self.acquire_reply(i, name, Some(token), fence, false, self.seq, r);
            }
            83..=85 => {
                let Some(i) = self.idle() else { return };
                let token = TOKENS[self.rng.random_range(0..TOKENS.len())].to_string();
                let script =
                    "return redis.call('LOCK.ACQUIRE', ARGV[1], ARGV[2], '600', 'BLOCK', '0')";
                self.note(format!(
                    "actor {i}: EVAL LOCK.ACQUIRE {} {token}",
                    NAMES[name]
                ));
                let r = self.actors[i]
                    .c
                    .call(&["EVAL", script, "0", NAMES[name], &token]);
                if let R::Error(_) = r {
                    self.note(format!("  -> {r:?}"));
                } else {
                    self.seq += 1;
                    self.acquire_reply(i, name, Some(token), false, false, self.seq, r);
                }
            }
            86..=89 => {
                let waiting = self.waiting_on(name);
                let Some(&k) = waiting.first() else { return };
                let id = self.actors[k].id.clone();
                let how = if self.rng.random_bool(0.5) {
                    "TIMEOUT"
                } else {
                    "ERROR"
                };
                let r = self.ctl.call(&["CLIENT", "UNBLOCK", id.as_str(), how]);
                self.note(format!("CLIENT UNBLOCK actor {k} {how} -> {r:?}"));
            }
            90..=95 => {
                self.note(format!("DEL lock:{}", NAMES[name]));
                let key = format!("lock:{}", NAMES[name]);
                let r = exec(
                    &mut self.ctl,
                    &[&["MULTI"][..], &["GET", &key], &["DEL", &key], &["EXEC"]],
                );
                self.ended_by(name, &r);
                self.holds[name] = None;
            }
            100..=103 => {
                // A user who may use i0 only: refused the others, with nothing changed.
                let token = TOKENS[self.rng.random_range(0..TOKENS.len())].to_string();
                let r = self
                    .limited
                    .call(&["LOCK.ACQUIRE", NAMES[name], &token, "600", "FENCE"]);
                self.note(format!(
                    "limited user: LOCK.ACQUIRE {} {token} FENCE -> {r:?}",
                    NAMES[name]
                ));
                match (name, &r) {
                    (0, R::Error(e)) => {
                        fail(self, &format!("the limited user refused its own lock: {e}"))
                    }
                    (0, _) => {
                        self.seq += 1;
                        let seq = self.seq;
                        self.acquire_reply(usize::MAX, 0, Some(token), true, false, seq, r)
                    }
                    (_, R::Error(e)) if e.starts_with("NOPERM") => {}
                    _ => fail(
                        self,
                        &format!("the limited user was not refused {}: {r:?}", NAMES[name]),
                    ),
                }
            }
            104..=106 => {
                // Writes paused for a moment: a waiter killed meanwhile, a release sent
                // meanwhile; both wait for the end. A write of the control connection's own
                // is held too: once it is answered, all that was held has run, in order.
                let ms = self.rng.random_range(2..15).to_string();
                self.note(format!("CLIENT PAUSE {ms} WRITE"));
                assert_eq!(self.ctl.call(&["CLIENT", "PAUSE", &ms, "WRITE"]), R::ok());
                if let Some(&k) = self.waiting_on(name).first() {
                    let id = self.actors[k].id.clone();
                    self.note(format!("  CLIENT KILL actor {k} while paused"));
                    assert_eq!(
                        self.ctl.call(&["CLIENT", "KILL", "ID", id.as_str()]),
                        R::Int(1)
                    );
                    self.replace(k);
                }
                if let Some(h) = self.holds[name].clone() {
                    let (cmd, want) = self.release_cmd(name, &h);
                    self.note(format!(
                        "  release {} by {:?} while paused",
                        NAMES[name], h.token
                    ));
                    let r = self.ctl.call(&cmd);
                    if r != want && !h.may_have_ended {
                        fail(self, &format!("the holder's release replied {r:?}"));
                    }
                    self.holds[name] = None;
                }
                self.ctl.call(&["SET", "pause-over", "1"]);
            }
            107..=108 => {
                // Eviction of every key (locks and fence counters alike), then memory back.
                self.note("maxmemory 1, allkeys-random: evict".into());
                for cmd in [
                    &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"][..],
                    &["CONFIG", "SET", "maxmemory", "1"][..],
                ] {
                    assert_eq!(self.ctl.call(cmd), R::ok());
                }
                // Until maxmemory is back (and what was granted meanwhile is read), any hold
                // may be evicted: even the grants the module makes in between.
                self.evicting = true;
                let r = self.ctl.call(&["SET", "evict-me", "x"]);
                assert_eq!(self.ctl.call(&["CONFIG", "SET", "maxmemory", "0"]), R::ok());
                self.note(format!("  SET under maxmemory 1 -> {r:?}"));
                self.settle();
                self.evicting = false;
                // Which of the holds told meanwhile is the last is LOCK.OWNER's to say; none
                // is certain to last (a later eviction took it, unseen).
                let window = std::mem::take(&mut self.evicted_window);
                // Fences replied meanwhile: each above every fence before, none twice (a
                // same-token group shares one).
                let mut fences = std::mem::take(&mut self.window_fences);
                fences.sort_unstable();
                fences.dedup();
                for (i, (n, f, token)) in fences.iter().enumerate() {
                    if *f <= self.max_fence[*n] {
                        let what = format!(
                            "fence {f} for {} to {token:?}: not above {} issued before",
                            NAMES[*n], self.max_fence[*n]
                        );
                        fail(self, &what);
                    }
                    if fences.get(i + 1).is_some_and(|(m, g, _)| m == n && g == f) {
                        fail(
                            self,
                            &format!("fence {f} for {} given to two tokens", NAMES[*n]),
                        );
                    }
                }
                for (n, f, _) in fences {
                    self.max_fence[n] = self.max_fence[n].max(f);
                }
                for (n, name) in NAMES.iter().enumerate() {
                    let owner = self.ctl.owner(name);
                    let told = window
                        .iter()
                        .rev()
                        .find(|(w, h)| *w == n && Some(&h.token) == owner.as_ref())
                        .map(|(_, h)| h.clone());
                    self.note(format!("  after the eviction {name} is {owner:?}'s"));
                    if let Some(h) = told {
                        self.holds[n] = Some(h);
                    }
                    if let Some(h) = &mut self.holds[n] {
                        h.may_have_ended = true;
                    }
                }
            }
            _ => {
                self.note("FLUSHALL".into());
                let keys: Vec<String> = NAMES.iter().map(|n| format!("lock:{n}")).collect();
                let r = exec(
                    &mut self.ctl,
                    &[
                        &["MULTI"][..],
                        &["GET", &keys[0]],
                        &["GET", &keys[1]],
                        &["GET", &keys[2]],
                        &["FLUSHALL"],
                        &["EXEC"],
                    ],
                );
                for n in 0..NAMES.len() {
                    self.ended_by(n, &r[n..]);
                }
                for h in &mut self.holds {
                    *h = None;
                }
                for a in &mut self.actors {
                    if let St::PyWait { flushed, .. } = &mut a.st {
                        *flushed = true;
                    }
                }
            }
        }
    }

    /// Every holder lets go until nobody waits; then the gauges are back to zero.
    fn finish(&mut self) {
        let start = Instant::now();
        loop {
            self.settle();
            self.check_owners();
            let held: Vec<usize> = (0..NAMES.len())
                .filter(|&n| self.holds[n].is_some())
                .collect();
            if held.is_empty() && self.outstanding() == 0 {
                break;
            }
            for n in held {
                self.release(n);
            }
            // A python-redis-lock waiter from before a FLUSHALL waits for a signal nobody
            // sends (as without the module): the operator's LPUSH.
            let flushed: Vec<usize> = self
                .actors
                .iter()
                .filter_map(|a| match a.st {
                    St::PyWait {
                        name,
                        flushed: true,
                        ..
                    } => Some(name),
                    _ => None,
                })
                .collect();
            for n in flushed {
                let signal = format!("lock-signal:{}", NAMES[n]);
                self.ctl.call(&["LPUSH", signal.as_str(), "1"]);
            }
            if start.elapsed() > DEADLINE * 3 {
                let st: Vec<String> = self.actors.iter().map(|a| format!("{:?}", a.st)).collect();
                fail(
                    self,
                    &format!("waiters never served (lost wake-up?): {st:?}"),
                );
            }
        }
        for field in [
            "rlock_waiters",
            "rlock_locks_with_waiters",
            "rlock_bound_locks",
        ] {
            let v = info_field_raw(&mut self.ctl, "rlock", field);
            if v != 0 {
                fail(
                    self,
                    &format!("INFO rlock {field} is {v} with nothing held or waiting"),
                );
            }
        }
        assert_eq!(
            info_field_raw(&mut self.ctl, "clients", "blocked_clients"),
            0
        );
    }
}

/// `MULTI`, the commands, `EXEC` (the first and last of `cmds`) sent at once: EXEC's replies.
fn exec(c: &mut Raw, cmds: &[&[&str]]) -> Vec<R> {
    c.send(cmds);
    for _ in 0..cmds.len() - 1 {
        let r = c.read("MULTI / QUEUED");
        assert!(matches!(&r, R::Status(_)), "{r:?}");
    }
    match c.read("EXEC") {
        R::Array(Some(v)) => v,
        other => panic!("EXEC replied {other:?}"),
    }
}

/// An integer field of `INFO <section>` read on a raw connection.
fn info_field_raw(c: &mut Raw, section: &str, field: &str) -> i64 {
    let text = c.call(&["INFO", section]).text().unwrap_or_default();
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_grant_keeps_the_promises() {
    let steps = env_u64("RLOCK_INVARIANT_STEPS", 300) as usize;
    let seeds = env_u64("RLOCK_INVARIANT_SEEDS", 2);
    for seed in 0..seeds {
        let mut run = Run::new(0x5eed_0000 + seed);
        for step in 0..steps {
            run.step = step;
            run.step();
            run.settle();
            run.check_owners();
        }
        run.step = steps;
        run.finish();
    }
}
