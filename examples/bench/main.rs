//! `make bench`: rlock against python-redis-lock's protocol, redis-py's Lock protocol and the
//! bare-command floor, on one redis-server this benchmark starts itself (unix socket in a temp
//! dir, `--save '' --appendonly no`, the module loaded) and kills when it is done.
//!
//! The competing protocols are spoken by this same Rust client, so client speed does not decide
//! the result; the real python-redis-lock library is also run under contention with 8 clients
//! (`scripts/bench_pylock.py`, in `.venv`). The reproduction leaves out the `GET lock:<name>`
//! the library sends before every acquire (its `_held` check), which favours python-redis-lock.
//!
//! Workloads (one function each):
//! 1. `uncontended`: acquire+release cycles on distinct names, pipelined and not: server time per
//!    cycle from `INFO commandstats` (top-level commands only), server CPU from /proc/<pid>/stat.
//! 2. `contended`: N clients (1, 8, 64) on one lock, holding it 0 or 1 ms: acquisitions/s,
//!    acquire latency p50/p99, commands per acquisition, fairness (min/max per client).
//! 3. `expiry_handoff`: the holder never releases; how long after its TTL ends a waiter holds it.
//! 4. `waiter_memory` and `release_cost`: 10,000 blocked waiters over 1,000 locks; the cost of a
//!    release with 10,000 waiters queued on one lock versus one.
//!
//! Output: tables on stdout, `docs/bench.md` (tables, machine, date) and `docs/bench.svg`
//! (acquire-latency distributions). `RLOCK_BENCH_TIME=0.3` scales the timed phases (for a quick
//! look; the committed numbers use 1);
//! `RLOCK_BENCH_ONLY=uncontended,contended,expiry,memory,release` runs only those workloads and
//! writes no docs. This is not a test: nothing here fails on a timing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

// ---- knobs ---------------------------------------------------------------------------------

const UNCONTENDED_SECS: f64 = 1.0;
/// Rounds over all protocols and modes; each figure is the median of its rounds.
const UNCONTENDED_ROUNDS: usize = 3;
const CONTENDED_SECS: f64 = 2.0;
const WARMUP_SECS: f64 = 0.25;
const PIPELINE_CYCLES: usize = 64;
const CLIENT_COUNTS: [usize; 3] = [1, 8, 64];
const HOLDS_MS: [u64; 2] = [0, 1];
const EXPIRY_ROUNDS: usize = 4;
const EXPIRY_TRIALS: usize = 50;
const WAITERS: usize = 10_000;
const WAITER_LOCKS: usize = 1_000;
const RING_ROUNDS: usize = 5;
/// Runs of the 8-client, hold-0 pair behind the throughput target (its median is judged):
/// python-redis-lock's barging makes single runs vary by 2× and more.
const TARGET_RUNS: usize = 5;
const RING_CYCLES: usize = 10_000;
/// Lease used by the contended and uncontended workloads (never reached).
const TTL_SECS: u64 = 10;

/// python-redis-lock 4.0.1's UNLOCK_SCRIPT (redis_lock/__init__.py), verbatim.
const PY_UNLOCK_SCRIPT: &str = r#"
    if redis.call("get", KEYS[1]) ~= ARGV[1] then
        return 1
    else
        redis.call("del", KEYS[2])
        redis.call("lpush", KEYS[2], 1)
        redis.call("pexpire", KEYS[2], ARGV[2])
        redis.call("del", KEYS[1])
        return 0
    end
"#;

/// redis-py 5.3.1's Lock.LUA_RELEASE_SCRIPT (redis/lock.py), verbatim.
const REDIS_PY_RELEASE_SCRIPT: &str = r#"
        local token = redis.call('get', KEYS[1])
        if not token or token ~= ARGV[1] then
            return 0
        end
        redis.call('del', KEYS[1])
        return 1
    "#;

/// python-redis-lock's default `signal_expire` (ms).
const PY_SIGNAL_EXPIRE_MS: u64 = 1000;
/// redis-py Lock's default `sleep` between attempts.
const REDIS_PY_SLEEP: Duration = Duration::from_millis(100);

fn time_scale() -> f64 {
    std::env::var("RLOCK_BENCH_TIME")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s * time_scale())
}

// ---- the server ----------------------------------------------------------------------------

struct Server {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    client: redis::Client,
}

impl Server {
    fn start(module: &Path, maxclients: usize) -> Server {
        let dir = std::env::temp_dir().join(format!("rlock-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("redis.sock");
        let log = fs::File::create(dir.join("server.log")).expect("server log");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--unixsocketperm")
            .arg("700")
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--maxclients", &maxclients.to_string()])
            .arg("--loadmodule")
            .arg(module)
            .stdout(Stdio::from(log))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh)");
        let client = redis::Client::open(format!("redis+unix://{}", sock.display())).unwrap();
        let mut server = Server {
            child,
            dir,
            sock,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                panic!("redis-server exited ({status}):\n{log}");
            }
            if server.sock.exists() {
                if let Ok(mut con) = server.client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn conn(&self) -> Connection {
        self.client.get_connection().expect("connect")
    }

    fn raw(&self) -> Raw {
        Raw(BufReader::with_capacity(
            64,
            UnixStream::connect(&self.sock).expect("connect"),
        ))
    }

    /// Server CPU time (user + system, all threads) so far, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of /proc/<pid>/stat; `after` starts at field 3.
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `INFO <section>` as a map.
fn info(con: &mut Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn info_u64(con: &mut Connection, section: &str, field: &str) -> u64 {
    info(con, section)[field].parse().unwrap()
}

/// `INFO commandstats`: command → (calls, usec).
fn commandstats(con: &mut Connection) -> HashMap<String, (u64, u64)> {
    let mut out = HashMap::new();
    for (k, v) in info(con, "commandstats") {
        let Some(cmd) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |name: &str| -> u64 {
            v.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        out.insert(cmd.to_lowercase(), (field("calls"), field("usec")));
    }
    out
}

fn reset_stats(con: &mut Connection) {
    redis::cmd("CONFIG").arg("RESETSTAT").exec(con).unwrap();
}

/// A bare connection speaking RESP by hand: for thousands of clients that only block.
struct Raw(BufReader<UnixStream>);

impl Raw {
    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            write!(out, "${}\r\n{a}\r\n", a.len()).unwrap();
        }
        let mut stream = self.0.get_ref();
        stream.write_all(out.as_bytes()).unwrap();
    }

    /// One single-line reply (`+OK`, `:1`, `$-1`, ...).
    fn line(&mut self) -> String {
        let mut s = String::new();
        self.0.read_line(&mut s).unwrap();
        assert!(s.ends_with("\r\n"), "connection closed");
        s.truncate(s.len() - 2);
        s
    }
}

// ---- the protocols -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Rlock,
    PyLock,
    RedisPy,
    /// Bare `SET NX PX` + `DEL`, on `floor:<name>`: with the module loaded, a DEL of a
    /// `lock:<name>` key is not bare any more (the module reacts to it: it signals
    /// python-redis-lock's waiters), so the floor stays outside the module's keys.
    Floor,
    /// The same bare commands on `lock:<name>`: what a foreign SET/DEL of a lock key costs
    /// with the module loaded (uncontended table only).
    FloorOnLockKeys,
}

const PROTOS: [Proto; 4] = [Proto::Rlock, Proto::PyLock, Proto::RedisPy, Proto::Floor];

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::Rlock => "rlock",
            Proto::PyLock => "python-redis-lock",
            Proto::RedisPy => "redis-py Lock",
            Proto::Floor => "floor",
            Proto::FloorOnLockKeys => "bare SET/DEL on lock:<name>",
        }
    }

    /// The top-level commands of one uncontended acquire+release cycle, as commandstats names
    /// them. Commands run inside a script are counted by Redis under their own names too; only
    /// these two are summed.
    fn top_level(self) -> [&'static str; 2] {
        match self {
            Proto::Rlock => ["lock.acquire", "lock.release"],
            Proto::PyLock | Proto::RedisPy => ["set", "evalsha"],
            Proto::Floor | Proto::FloorOnLockKeys => ["set", "del"],
        }
    }

    /// The key holding lock `name`.
    fn key(self, name: &str) -> String {
        match self {
            Proto::Floor => format!("floor:{name}"),
            _ => format!("lock:{name}"),
        }
    }
}

#[derive(Clone)]
struct Shas {
    py_unlock: String,
    redis_py_release: String,
}

fn load_scripts(con: &mut Connection) -> Shas {
    let load = |con: &mut Connection, s: &str| -> String {
        redis::cmd("SCRIPT").arg("LOAD").arg(s).query(con).unwrap()
    };
    Shas {
        py_unlock: load(con, PY_UNLOCK_SCRIPT),
        redis_py_release: load(con, REDIS_PY_RELEASE_SCRIPT),
    }
}

/// One lock client: a connection, a protocol and a token (24 characters, like
/// python-redis-lock's default id).
struct Client {
    con: Connection,
    proto: Proto,
    shas: Shas,
    token: String,
    ttl_secs: u64,
}

impl Client {
    fn new(server: &Server, proto: Proto, shas: &Shas, id: usize, ttl_secs: u64) -> Client {
        Client {
            con: server.conn(),
            proto,
            shas: shas.clone(),
            token: format!("bench-token-{id:012}"),
            ttl_secs,
        }
    }

    /// One attempt to take `name` (rlock: with `BLOCK 0`, as a waiting client calls it).
    fn try_cmd(&self, name: &str) -> redis::Cmd {
        let key = self.proto.key(name);
        match self.proto {
            Proto::Rlock => redis::cmd("LOCK.ACQUIRE")
                .arg(name)
                .arg(&self.token)
                .arg(self.ttl_secs)
                .arg("BLOCK")
                .arg(0)
                .to_owned(),
            Proto::PyLock => redis::cmd("SET")
                .arg(key)
                .arg(&self.token)
                .arg("NX")
                .arg("EX")
                .arg(self.ttl_secs)
                .to_owned(),
            Proto::RedisPy | Proto::Floor | Proto::FloorOnLockKeys => redis::cmd("SET")
                .arg(key)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_secs * 1000)
                .to_owned(),
        }
    }

    fn release_cmd(&self, name: &str) -> redis::Cmd {
        let key = self.proto.key(name);
        match self.proto {
            Proto::Rlock => redis::cmd("LOCK.RELEASE")
                .arg(name)
                .arg(&self.token)
                .to_owned(),
            Proto::PyLock => redis::cmd("EVALSHA")
                .arg(&self.shas.py_unlock)
                .arg(2)
                .arg(key)
                .arg(format!("lock-signal:{name}"))
                .arg(&self.token)
                .arg(PY_SIGNAL_EXPIRE_MS)
                .to_owned(),
            Proto::RedisPy => redis::cmd("EVALSHA")
                .arg(&self.shas.redis_py_release)
                .arg(1)
                .arg(key)
                .arg(&self.token)
                .to_owned(),
            Proto::Floor | Proto::FloorOnLockKeys => redis::cmd("DEL").arg(key).to_owned(),
        }
    }

    /// The reply of a successful release.
    fn released(&self) -> Value {
        match self.proto {
            Proto::PyLock => Value::Int(0),
            _ => Value::Int(1),
        }
    }

    /// Take `name`, waiting the way the protocol waits.
    fn acquire(&mut self, name: &str) {
        let attempt = self.try_cmd(name);
        loop {
            match attempt.query::<Value>(&mut self.con).unwrap() {
                Value::Okay => return,
                Value::Nil => {}
                other => panic!("{}: acquire replied {other:?}", self.proto.label()),
            }
            match self.proto {
                // Only reached if the server refused to block.
                Proto::Rlock => panic!("LOCK.ACQUIRE BLOCK 0 replied nil"),
                // python-redis-lock: BLPOP the signal list for `expire` seconds, then retry.
                Proto::PyLock => {
                    redis::cmd("BLPOP")
                        .arg(format!("lock-signal:{name}"))
                        .arg(self.ttl_secs)
                        .query::<Value>(&mut self.con)
                        .unwrap();
                }
                Proto::RedisPy => thread::sleep(REDIS_PY_SLEEP),
                // No waking at all: spin.
                Proto::Floor | Proto::FloorOnLockKeys => {}
            }
        }
    }

    fn release(&mut self, name: &str) {
        let reply: Value = self.release_cmd(name).query(&mut self.con).unwrap();
        assert_eq!(reply, self.released(), "{}: release", self.proto.label());
    }
}

// ---- statistics ----------------------------------------------------------------------------

/// Sorted samples.
struct Dist(Vec<f64>);

impl Dist {
    fn new(mut v: Vec<f64>) -> Dist {
        v.sort_by(|a, b| a.total_cmp(b));
        Dist(v)
    }

    fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }
}

fn fmt_us(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_count(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

// ---- workload 1: uncontended ---------------------------------------------------------------

struct Uncontended {
    proto: Proto,
    pipelined: bool,
    cycles_per_sec: f64,
    server_us: f64,
    cpu_us: f64,
}

fn uncontended(server: &Server, shas: &Shas, proto: Proto, pipelined: bool) -> Uncontended {
    let mut admin = server.conn();
    let mut c = Client::new(server, proto, shas, 0, TTL_SECS);
    let tag = if pipelined { "p" } else { "s" };
    let mut i = 0usize;
    let batch = |c: &mut Client, i: &mut usize| -> usize {
        if pipelined {
            let mut pipe = redis::pipe();
            for _ in 0..PIPELINE_CYCLES {
                let name = format!("u{tag}-{}-{i}", proto as u8);
                pipe.add_command(c.try_cmd(&name));
                pipe.add_command(c.release_cmd(&name));
                *i += 1;
            }
            let replies: Vec<Value> = pipe.query(&mut c.con).unwrap();
            for pair in replies.chunks(2) {
                assert_eq!(pair[0], Value::Okay);
                assert_eq!(pair[1], c.released());
            }
            PIPELINE_CYCLES
        } else {
            let name = format!("u{tag}-{}-{i}", proto as u8);
            c.acquire(&name);
            c.release(&name);
            *i += 1;
            1
        }
    };
    // Start from an empty keyspace: the previous run's `lock-signal:*` lists (1 s TTL) would
    // still be expiring.
    redis::cmd("FLUSHALL").exec(&mut admin).unwrap();
    let warm = Instant::now();
    while warm.elapsed() < secs(WARMUP_SECS) {
        batch(&mut c, &mut i);
    }
    reset_stats(&mut admin);
    let cpu0 = server.cpu_secs();
    let t0 = Instant::now();
    let mut cycles = 0;
    while t0.elapsed() < secs(UNCONTENDED_SECS) {
        cycles += batch(&mut c, &mut i);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_secs() - cpu0;
    let stats = commandstats(&mut admin);
    let usec: u64 = proto
        .top_level()
        .iter()
        .map(|cmd| {
            let (calls, usec) = stats[*cmd];
            assert_eq!(calls as usize, cycles, "{cmd} calls");
            usec
        })
        .sum();
    Uncontended {
        proto,
        pipelined,
        cycles_per_sec: cycles as f64 / elapsed,
        server_us: usec as f64 / cycles as f64,
        cpu_us: cpu * 1e6 / cycles as f64,
    }
}

/// Per protocol and mode, the median of each figure over the rounds.
fn median_uncontended(rounds: &[Vec<Uncontended>]) -> Vec<Uncontended> {
    let median = |f: &dyn Fn(&Uncontended) -> f64, i: usize| {
        Dist::new(rounds.iter().map(|round| f(&round[i])).collect()).q(0.5)
    };
    (0..rounds[0].len())
        .map(|i| Uncontended {
            proto: rounds[0][i].proto,
            pipelined: rounds[0][i].pipelined,
            cycles_per_sec: median(&|u| u.cycles_per_sec, i),
            server_us: median(&|u| u.server_us, i),
            cpu_us: median(&|u| u.cpu_us, i),
        })
        .collect()
}

// ---- workload 2: contended -----------------------------------------------------------------

struct Contended {
    who: String,
    clients: usize,
    hold_ms: u64,
    acq_per_sec: f64,
    lat: Dist,
    cmds_per_acq: f64,
    /// Server CPU time per acquisition, µs.
    cpu_us: f64,
    min_per_client: u64,
    max_per_client: u64,
}

fn contended(
    server: &Server,
    shas: &Shas,
    proto: Proto,
    clients: usize,
    hold_ms: u64,
) -> Contended {
    let name = format!("c-{}-{clients}-{hold_ms}", proto as u8);
    let hold = Duration::from_millis(hold_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|id| {
            let mut c = Client::new(server, proto, shas, id, TTL_SECS);
            let (name, stop, measuring, total, start) = (
                name.clone(),
                stop.clone(),
                measuring.clone(),
                total.clone(),
                start.clone(),
            );
            thread::spawn(move || {
                let (mut count, mut lat) = (0u64, Vec::new());
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    c.acquire(&name);
                    let waited = t0.elapsed();
                    total.fetch_add(1, Ordering::Relaxed);
                    if !hold.is_zero() {
                        thread::sleep(hold);
                    }
                    c.release(&name);
                    if measuring.load(Ordering::Relaxed) {
                        count += 1;
                        lat.push(waited.as_secs_f64() * 1e6);
                    }
                }
                (count, lat)
            })
        })
        .collect();
    let mut admin = server.conn();
    start.wait();
    thread::sleep(secs(WARMUP_SECS));
    let cmds0 = info_u64(&mut admin, "stats", "total_commands_processed");
    let acq0 = total.load(Ordering::Relaxed);
    let cpu0 = server.cpu_secs();
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    thread::sleep(secs(CONTENDED_SECS));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let acq1 = total.load(Ordering::Relaxed);
    let cpu = server.cpu_secs() - cpu0;
    // The first INFO's own count is included in the second's figure.
    let cmds1 = info_u64(&mut admin, "stats", "total_commands_processed") - 1;
    stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    let mut lat = Vec::new();
    for w in workers {
        let (n, l) = w.join().expect("client thread");
        counts.push(n);
        lat.extend(l);
    }
    let acquisitions = (acq1 - acq0) as f64;
    Contended {
        who: proto.label().into(),
        clients,
        hold_ms,
        acq_per_sec: acquisitions / elapsed,
        lat: Dist::new(lat),
        cmds_per_acq: (cmds1 - cmds0) as f64 / acquisitions,
        cpu_us: cpu * 1e6 / acquisitions,
        min_per_client: *counts.iter().min().unwrap(),
        max_per_client: *counts.iter().max().unwrap(),
    }
}

/// The real python-redis-lock library, through `scripts/bench_pylock.py`.
fn contended_real_python(
    server: &Server,
    root: &Path,
    clients: usize,
    hold_ms: u64,
) -> Option<Contended> {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        eprintln!(
            "bench: {} missing (scripts/setup.sh --python); skipping the real library",
            python.display()
        );
        return None;
    }
    let out = Command::new(python)
        .arg(root.join("scripts/bench_pylock.py"))
        .arg("--socket")
        .arg(&server.sock)
        .args(["--name", &format!("real-{clients}-{hold_ms}")])
        .args(["--clients", &clients.to_string()])
        .args(["--hold-ms", &hold_ms.to_string()])
        .args(["--seconds", &(CONTENDED_SECS * time_scale()).to_string()])
        .args(["--warmup", &(WARMUP_SECS * time_scale()).to_string()])
        .args(["--expire", &TTL_SECS.to_string()])
        .args(["--server-pid", &server.child.id().to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert!(out.status.success(), "bench_pylock.py failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let list = |k: &str| -> Vec<f64> {
        kv[k]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let acquisitions: f64 = kv["acquisitions"].parse().unwrap();
    let per_client = list("per_client");
    Some(Contended {
        who: "python-redis-lock (real library)".into(),
        clients,
        hold_ms,
        acq_per_sec: acquisitions / kv["seconds"].parse::<f64>().unwrap(),
        lat: Dist::new(list("latencies_us")),
        cmds_per_acq: kv["commands"].parse::<f64>().unwrap() / acquisitions,
        cpu_us: kv["server_cpu"].parse::<f64>().unwrap() * 1e6 / acquisitions,
        min_per_client: per_client.iter().cloned().fold(f64::MAX, f64::min) as u64,
        max_per_client: per_client.iter().cloned().fold(0.0, f64::max) as u64,
    })
}

// ---- workload 3: expiry handoff ------------------------------------------------------------

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The holder takes a lock for 1 s and never releases it; a waiter arrives at a point spread
/// over the lease and waits the protocol's way. The trials of a round start 10 ms apart, so
/// their leases end one by one rather than all in the same millisecond. Returns, per trial,
/// the milliseconds from the lease end (`PEXPIRETIME`) to the waiter holding the lock.
fn expiry_handoff(server: &Server, shas: &Shas, proto: Proto) -> Vec<f64> {
    let mut admin = server.conn();
    let mut holder = Client::new(server, proto, shas, 999_999, 1);
    let mut delays = Vec::new();
    for round in 0..EXPIRY_ROUNDS {
        let mut trials = Vec::new();
        for i in 0..EXPIRY_TRIALS {
            let name = format!("e-{}-{round}-{i}", proto as u8);
            let taken: Value = holder.try_cmd(&name).query(&mut holder.con).unwrap();
            assert_eq!(taken, Value::Okay);
            let deadline: i64 = redis::cmd("PEXPIRETIME")
                .arg(format!("lock:{name}"))
                .query(&mut admin)
                .unwrap();
            let mut c = Client::new(server, proto, shas, i, 1);
            let arrive = Duration::from_millis((i * 900 / EXPIRY_TRIALS) as u64);
            let waiter = thread::spawn(move || {
                thread::sleep(arrive);
                c.acquire(&name);
                let at = unix_ms();
                c.release(&name);
                at
            });
            trials.push((waiter, deadline as f64));
            thread::sleep(Duration::from_millis(10));
        }
        for (waiter, deadline) in trials {
            delays.push(waiter.join().expect("waiter") - deadline);
        }
    }
    delays
}

// ---- workload 4: many waiters --------------------------------------------------------------

/// Wait until the `INFO clients` field `field` satisfies `ok`.
fn await_clients(admin: &mut Connection, field: &str, ok: impl Fn(u64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = info_u64(admin, "clients", field);
        if ok(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{field} stuck at {n}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// `used_memory` once Redis's client cron has settled every client's buffers: query buffers are
/// trimmed after 2 s idle, reply buffers shrink on the first cron pass. Median of 3 samples.
fn settled_memory(admin: &mut Connection) -> f64 {
    thread::sleep(Duration::from_millis(4500));
    let mut v: Vec<f64> = (0..3)
        .map(|i| {
            if i > 0 {
                thread::sleep(Duration::from_millis(400));
            }
            info_u64(admin, "memory", "used_memory") as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[1]
}

/// `used_memory` of one population of clients in each state.
struct MemStates {
    /// Connected, idle (after `CLIENT ID`).
    idle: f64,
    /// The blocking command sent while `CLIENT PAUSE WRITE` holds it back: Redis keeps the
    /// parsed command (argv) and a list node, and the module has not run yet.
    postponed: Option<f64>,
    /// Blocked.
    blocked: f64,
    /// Right after `CLIENT UNBLOCK` of every one of them: connected and idle again.
    unblocked: f64,
}

struct Memory {
    waiters: usize,
    locks: usize,
    lock: MemStates,
    /// The same clients blocked in BLPOP: Redis's own blocked-client cost, for reference.
    blpop: MemStates,
}

impl MemStates {
    /// Everything a waiter adds to an idle client.
    fn total(&self, n: usize) -> f64 {
        (self.blocked - self.idle) / n as f64
    }
    /// What leaving the queue frees again. Redis 7.0 keeps the two client objects that
    /// `RedisModule_BlockClient` took from its temp-client pool in that pool, and trims the pool
    /// (50 per server cron, from the second cron on) only later, so they are still counted
    /// right after the unblock.
    fn released(&self, n: usize) -> f64 {
        (self.blocked - self.unblocked) / n as f64
    }
    /// What stays allocated in Redis after the waiters left.
    fn pooled(&self, n: usize) -> f64 {
        (self.unblocked - self.idle) / n as f64
    }
    /// The parsed command Redis keeps for a client whose command waits.
    fn argv(&self, n: usize) -> Option<f64> {
        self.postponed.map(|p| (p - self.idle) / n as f64)
    }
    /// The module's waiter state plus Redis's blocked-client handle: what leaving the queue
    /// frees, minus the parsed command.
    fn own(&self, n: usize) -> Option<f64> {
        self.argv(n).map(|a| self.released(n) - a)
    }
}

/// `waiters` connections: idle; with the blocking command held back by `CLIENT PAUSE WRITE`
/// (LOCK.ACQUIRE only); blocked; right after `CLIENT UNBLOCK`. First with BLPOP on `locks`
/// keys (reference), then with `LOCK.ACQUIRE ... BLOCK 0` on `locks` held locks. Runs with
/// `hz 1` so that Redis's crons do not trim buffers or pools between two samples.
fn waiter_memory(server: &Server, waiters: usize, locks: usize) -> Memory {
    let mut admin = server.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("hz")
        .arg(1)
        .exec(&mut admin)
        .unwrap();
    for j in 0..locks {
        let r: Value = redis::cmd("LOCK.ACQUIRE")
            .arg(format!("m-{j}"))
            .arg("holder")
            .arg(600)
            .query(&mut admin)
            .unwrap();
        assert_eq!(r, Value::Okay);
    }
    let base_clients = info_u64(&mut admin, "clients", "connected_clients");
    let base_blocked = info_u64(&mut admin, "clients", "blocked_clients");
    let all_blocked = |admin: &mut Connection| {
        await_clients(admin, "blocked_clients", |n| {
            n >= base_blocked + waiters as u64
        })
    };
    let measure = |admin: &mut Connection, pause: bool, block: &dyn Fn(usize) -> Vec<String>| {
        let mut conns: Vec<Raw> = (0..waiters).map(|_| server.raw()).collect();
        for c in &mut conns {
            c.send(&["CLIENT", "ID"]);
        }
        let ids: Vec<String> = conns
            .iter_mut()
            .map(|c| c.line()[1..].to_string())
            .collect();
        let idle = settled_memory(admin);
        if pause {
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(600_000)
                .arg("WRITE")
                .exec(admin)
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let args = block(i);
            c.send(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        all_blocked(admin);
        let postponed = pause.then(|| {
            let m = settled_memory(admin);
            redis::cmd("CLIENT").arg("UNPAUSE").exec(admin).unwrap();
            m
        });
        all_blocked(admin);
        let blocked = settled_memory(admin);
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("CLIENT").arg("UNBLOCK").arg(id);
            }
            let unblocked: Vec<i64> = pipe.query(admin).unwrap();
            assert!(unblocked.iter().all(|&x| x == 1), "CLIENT UNBLOCK");
        }
        let unblocked = info_u64(admin, "memory", "used_memory") as f64;
        drop(conns);
        await_clients(admin, "connected_clients", |n| n <= base_clients);
        MemStates {
            idle,
            postponed,
            blocked,
            unblocked,
        }
    };
    // BLPOP first, while Redis's temp-client pool is empty and not being trimmed.
    let blpop = measure(&mut admin, false, &|i| {
        vec![
            "BLPOP".into(),
            format!("lock-signal:q-{}", i % locks),
            "0".into(),
        ]
    });
    let lock = measure(&mut admin, true, &|i| {
        vec![
            "LOCK.ACQUIRE".into(),
            format!("m-{}", i % locks),
            format!("bench-token-{i:012}"),
            "600".into(),
            "BLOCK".into(),
            "0".into(),
        ]
    });
    redis::cmd("LOCK.RESETALL").exec(&mut admin).unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("hz")
        .arg(10)
        .exec(&mut admin)
        .unwrap();
    Memory {
        waiters,
        locks,
        lock,
        blpop,
    }
}

struct ReleaseCost {
    queued: usize,
    release_us: f64,
    acquire_us: f64,
    cpu_us_per_cycle: f64,
}

/// `queued` waiters in line on one lock, plus the holder, each on its own connection. A cycle:
/// the holder sends, in one write, `LOCK.RELEASE` (the lock goes to the head of the line) and
/// `LOCK.ACQUIRE ... BLOCK 0` (it joins the tail), so every release finds exactly `queued`
/// waiters; then the new holder reads its `OK`.
struct Ring {
    name: String,
    conns: Vec<Raw>,
    holder: usize,
}

fn ring_token(i: usize) -> String {
    format!("bench-token-{i:012}")
}

impl Ring {
    fn new(server: &Server, admin: &mut Connection, queued: usize) -> Ring {
        let name = format!("ring-{queued}");
        let mut conns: Vec<Raw> = (0..=queued).map(|_| server.raw()).collect();
        conns[0].send(&["LOCK.ACQUIRE", &name, &ring_token(0), "600"]);
        assert_eq!(conns[0].line(), "+OK");
        let base = info_u64(admin, "clients", "blocked_clients");
        // Queue the others in ring order: each must be blocked before the next is sent.
        for (i, c) in conns.iter_mut().enumerate().skip(1) {
            c.send(&["LOCK.ACQUIRE", &name, &ring_token(i), "600", "BLOCK", "0"]);
            await_clients(admin, "blocked_clients", |n| n >= base + i as u64);
        }
        Ring {
            name,
            conns,
            holder: 0,
        }
    }

    fn cycle(&mut self) {
        let (i, name) = (self.holder, &self.name);
        let t = ring_token(i);
        let out = format!(
            "*3\r\n$12\r\nLOCK.RELEASE\r\n${}\r\n{name}\r\n${}\r\n{t}\r\n\
             *6\r\n$12\r\nLOCK.ACQUIRE\r\n${}\r\n{name}\r\n${}\r\n{t}\r\n$3\r\n600\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n",
            name.len(),
            t.len(),
            name.len(),
            t.len()
        );
        let mut stream = self.conns[i].0.get_ref();
        stream.write_all(out.as_bytes()).unwrap();
        assert_eq!(self.conns[i].line(), ":1");
        self.holder = (i + 1) % self.conns.len();
        assert_eq!(self.conns[self.holder].line(), "+OK");
    }

    fn queued(&self) -> usize {
        self.conns.len() - 1
    }
}

/// Release cost with each queue length in `queues`: all rings are set up at once and measured
/// in interleaved chunks of `cycles` (`rounds` each), so that machine noise hits all alike;
/// per ring the median chunk. Server time per call from commandstats, CPU per cycle from /proc.
fn release_cost(
    server: &Server,
    queues: &[usize],
    rounds: usize,
    cycles: usize,
) -> Vec<ReleaseCost> {
    let mut admin = server.conn();
    let base_clients = info_u64(&mut admin, "clients", "connected_clients");
    let mut rings: Vec<Ring> = queues
        .iter()
        .map(|&q| Ring::new(server, &mut admin, q))
        .collect();
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); rings.len()];
    for round in 0..=rounds {
        for (ring, samples) in rings.iter_mut().zip(&mut samples) {
            reset_stats(&mut admin);
            let cpu0 = server.cpu_secs();
            for _ in 0..cycles {
                ring.cycle();
            }
            let cpu = server.cpu_secs() - cpu0;
            let stats = commandstats(&mut admin);
            let per_call = |cmd: &str| {
                let (calls, usec) = stats[cmd];
                usec as f64 / calls as f64
            };
            // Round 0 warms up.
            if round > 0 {
                samples.push((
                    per_call("lock.release"),
                    per_call("lock.acquire"),
                    cpu * 1e6 / cycles as f64,
                ));
            }
        }
    }
    let median = |v: Vec<f64>| Dist::new(v).q(0.5);
    let result = rings
        .iter()
        .zip(samples)
        .map(|(ring, s)| ReleaseCost {
            queued: ring.queued(),
            release_us: median(s.iter().map(|x| x.0).collect()),
            acquire_us: median(s.iter().map(|x| x.1).collect()),
            cpu_us_per_cycle: median(s.iter().map(|x| x.2).collect()),
        })
        .collect();
    drop(rings);
    await_clients(&mut admin, "connected_clients", |n| n <= base_clients);
    result
}

// ---- output --------------------------------------------------------------------------------

/// A Markdown table that also reads well on a terminal.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let cols = self.head.len();
        let width = |i: usize| {
            std::iter::once(&self.head[i])
                .chain(self.rows.iter().map(|r| &r[i]))
                .map(|s| s.chars().count())
                .max()
                .unwrap()
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(&widths) {
                let pad = w - c.chars().count();
                write!(s, " {c}{} |", " ".repeat(pad)).unwrap();
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.head);
        out.push('|');
        for w in &widths {
            write!(out, "{}|", "-".repeat(w + 2)).unwrap();
        }
        out.push('\n');
        for r in &self.rows {
            out += &line(r);
        }
        out
    }
}

/// Collects the report: printed as it goes, written to docs/bench.md at the end.
struct Report(String);

impl Report {
    fn section(&mut self, title: &str, intro: &str, table: &Table) {
        let mut s = format!("\n### {title}\n\n");
        if !intro.is_empty() {
            s += intro;
            s += "\n\n";
        }
        s += &table.render();
        print!("{s}");
        std::io::stdout().flush().unwrap();
        self.0 += &s;
    }
}

fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

fn verdict(ok: bool, note: String) -> String {
    if ok {
        format!("met ({note})")
    } else {
        format!("**MISSED** ({note})")
    }
}

// ---- the SVG plot --------------------------------------------------------------------------

struct Series<'a> {
    color: &'static str,
    dashed: bool,
    values: &'a [f64],
}

fn color(proto: Proto) -> &'static str {
    match proto {
        Proto::Rlock => "#d62728",
        Proto::PyLock => "#1f77b4",
        Proto::RedisPy => "#2ca02c",
        Proto::Floor | Proto::FloorOnLockKeys => "#7f7f7f",
    }
}

/// One panel: the CDF of each series over a log x axis from `lo` to `hi`.
/// A log-scale x axis from `lo` to `hi`, in `unit` ("µs" or "ms").
struct Axis {
    unit: &'static str,
    lo: f64,
    hi: f64,
}

const LATENCY_AXIS: Axis = Axis {
    unit: "µs",
    lo: 10.0,
    hi: 1e6,
};
const EXPIRY_AXIS: Axis = Axis {
    unit: "ms",
    lo: 0.1,
    hi: 1e4,
};

fn svg_panel(out: &mut String, (x, y): (f64, f64), title: &str, axis: &Axis, series: &[Series]) {
    let Axis { unit, lo, hi } = *axis;
    let (w, h) = (400.0, 220.0);
    let (pl, pt) = (x + 50.0, y + 28.0);
    let (pw, ph) = (w - 70.0, h - 70.0);
    let fx = |v: f64| pl + (v.max(lo).min(hi) / lo).log10() / (hi / lo).log10() * pw;
    let fy = |q: f64| pt + ph - q * ph;
    writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{title}</text>"#,
        x + 50.0,
        y + 16.0
    )
    .unwrap();
    writeln!(
        out,
        r##"<rect x="{pl}" y="{pt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    )
    .unwrap();
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        let tx = fx(tick);
        writeln!(
            out,
            r##"<line x1="{tx}" y1="{pt}" x2="{tx}" y2="{}" stroke="#ddd"/>"##,
            pt + ph
        )
        .unwrap();
        let us = if unit == "ms" { tick * 1000.0 } else { tick };
        let label = if us >= 1e6 {
            format!("{}s", us / 1e6)
        } else if us >= 1000.0 {
            format!("{}ms", us / 1000.0)
        } else {
            format!("{us}µs")
        };
        writeln!(
            out,
            r#"<text x="{tx}" y="{}" font-size="10" text-anchor="middle">{label}</text>"#,
            pt + ph + 13.0
        )
        .unwrap();
        tick *= 10.0;
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let ty = fy(q);
        writeln!(
            out,
            r##"<line x1="{pl}" y1="{ty}" x2="{}" y2="{ty}" stroke="#eee"/>"##,
            pl + pw
        )
        .unwrap();
        writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{q}</text>"#,
            pl - 4.0,
            ty + 3.0
        )
        .unwrap();
    }
    for s in series {
        let n = s.values.len();
        if n == 0 {
            continue;
        }
        let mut pts = String::new();
        let steps = n.min(400);
        for k in 0..=steps {
            let idx = ((n - 1) * k) / steps;
            let q = (idx + 1) as f64 / n as f64;
            write!(pts, "{:.1},{:.1} ", fx(s.values[idx]), fy(q)).unwrap();
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        writeln!(
            out,
            r#"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
            s.color
        )
        .unwrap();
    }
}

fn write_svg(path: &Path, contended: &[Contended], expiry: &[(Proto, Vec<f64>)]) {
    let (cols, w, h) = (2usize, 400.0, 220.0);
    let rows = CLIENT_COUNTS.len() + 1;
    let (width, height) = (cols as f64 * w + 10.0, rows as f64 * h + 60.0);
    let mut out = String::new();
    writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#).unwrap();
    writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##).unwrap();
    writeln!(out, r#"<text x="10" y="22" font-size="15" font-weight="bold">rlock benchmark: cumulative distribution of acquire latency (x: log scale)</text>"#).unwrap();
    let series_for = |clients: usize, hold: u64| -> Vec<Series> {
        contended
            .iter()
            .filter(|c| c.clients == clients && c.hold_ms == hold)
            .map(|c| {
                let proto = PROTOS.iter().find(|p| p.label() == c.who);
                Series {
                    color: proto.map(|p| color(*p)).unwrap_or("#9467bd"),
                    dashed: proto.is_none(),
                    values: &c.lat.0,
                }
            })
            .collect()
    };
    for (r, clients) in CLIENT_COUNTS.iter().enumerate() {
        for (col, hold) in HOLDS_MS.iter().enumerate() {
            let title = format!(
                "{clients} client{}, hold {hold} ms",
                if *clients == 1 { "" } else { "s" }
            );
            let s = series_for(*clients, *hold);
            let at = (col as f64 * w, 30.0 + r as f64 * h);
            svg_panel(&mut out, at, &title, &LATENCY_AXIS, &s);
        }
    }
    let sorted: Vec<(Proto, Dist)> = expiry
        .iter()
        .map(|(p, v)| (*p, Dist::new(v.clone())))
        .collect();
    let ex: Vec<Series> = sorted
        .iter()
        .map(|(p, d)| Series {
            color: color(*p),
            dashed: false,
            values: &d.0,
        })
        .collect();
    let ey = 30.0 + CLIENT_COUNTS.len() as f64 * h;
    let title = "Expiry handoff: time from lease end to the waiter holding it";
    svg_panel(&mut out, (0.0, ey), title, &EXPIRY_AXIS, &ex);
    // Legend.
    let mut ly = ey + 40.0;
    let legend: Vec<(&str, &str, bool)> = PROTOS
        .iter()
        .map(|p| (p.label(), color(*p), false))
        .chain(std::iter::once((
            "python-redis-lock (real library)",
            "#9467bd",
            true,
        )))
        .collect();
    for (label, c, dashed) in legend {
        let dash = if dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>"#,
            w + 30.0,
            w + 60.0
        )
        .unwrap();
        writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12">{label}</text>"#,
            w + 68.0,
            ly + 4.0
        )
        .unwrap();
        ly += 20.0;
    }
    writeln!(out, r##"<text x="{}" y="{}" font-size="11" fill="#555">y: fraction of acquisitions at or below x</text>"##, w + 30.0, ly + 10.0).unwrap();
    out += "</svg>\n";
    fs::write(path, out).expect("write svg");
}

// ---- machine -------------------------------------------------------------------------------

/// The module's source revision: the commit, and whether src/ had uncommitted changes.
fn revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["log", "-1", "--format=%h %s"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--", "src"]).is_some_and(|s| !s.is_empty());
            let dirty = if dirty {
                " (plus uncommitted changes in src/)"
            } else {
                ""
            };
            format!("commit {head}{dirty}")
        }
        None => "unknown (not a git checkout)".into(),
    }
}

fn machine(admin: &mut Connection, root: &Path) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let srv = info(admin, "server");
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "- Date: {date}\n- CPU: {cpu}, nproc = {nproc}\n- Linux {}\n- Redis {} ({}), unix socket, `--save '' --appendonly no`; benchmark client on the same machine\n- Module: {}\n",
        kernel.trim(),
        srv["redis_version"],
        info(admin, "memory").get("mem_allocator").map(String::as_str).unwrap_or("?"),
        revision(root),
    )
}

/// Raise this process's open-file limit (inherited by redis-server) for 10,000 connections.
fn raise_nofile(want: u64) -> u64 {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

// ---- main ----------------------------------------------------------------------------------

/// `RLOCK_BENCH_ONLY=uncontended,contended,expiry,memory,release` runs only those workloads
/// (and then writes no docs).
fn only() -> Option<Vec<String>> {
    std::env::var("RLOCK_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
}

fn wanted(phase: &str) -> bool {
    only().is_none_or(|o| o.iter().any(|x| x == phase))
}

#[derive(Default)]
struct Results {
    unc: Vec<Uncontended>,
    con: Vec<Contended>,
    expiry: Vec<(Proto, Vec<f64>)>,
    mem: Option<Memory>,
    costs: Vec<ReleaseCost>,
    /// Acquisitions/s of (rlock, python-redis-lock protocol) with 8 clients, hold 0, in
    /// alternating repeat runs (the table's run first).
    repeats: Vec<(f64, f64)>,
}

impl Results {
    fn unc(&self, p: Proto, pipelined: bool) -> &Uncontended {
        self.unc
            .iter()
            .find(|u| u.proto == p && u.pipelined == pipelined)
            .unwrap()
    }
}

fn report_uncontended(r: &Results, report: &mut Report) {
    let mut t = Table::new(&[
        "protocol",
        "mode",
        "cycles/s (client)",
        "server µs/cycle",
        "vs python-redis-lock",
        "vs floor",
        "server CPU µs/cycle",
    ]);
    for u in &r.unc {
        let py = r.unc(Proto::PyLock, u.pipelined).server_us;
        let floor = r.unc(Proto::Floor, u.pipelined).server_us;
        t.row(vec![
            u.proto.label().into(),
            if u.pipelined {
                format!("pipelined ×{PIPELINE_CYCLES}")
            } else {
                "one at a time".into()
            },
            format!("{:.0}", u.cycles_per_sec),
            format!("{:.2}", u.server_us),
            ratio(u.server_us / py),
            ratio(u.server_us / floor),
            format!("{:.2}", u.cpu_us),
        ]);
    }
    report.section(
        "1. Uncontended acquire + release on distinct names",
        &format!(
            "Server µs/cycle: `usec` of the cycle's two top-level commands in `INFO commandstats` \
             (rlock: LOCK.ACQUIRE ... BLOCK 0 + LOCK.RELEASE; python-redis-lock: SET NX EX + \
             EVALSHA unlock script; redis-py: SET NX PX + EVALSHA release script; floor: SET NX PX \
             + DEL on `floor:<name>`) / cycles. The floor stays off `lock:<name>` keys because the \
             module reacts to a DEL of one (it arms a timer and signals python-redis-lock's \
             waiters); the last row shows what the same bare commands cost on `lock:<name>`. The \
             python-redis-lock and redis-py rows pay that reaction too, as they would on any server \
             with rlock loaded. Server CPU: utime+stime of redis-server from /proc/<pid>/stat per \
             cycle (includes socket I/O, the event loop, module timers, and expiring the \
             `lock-signal:<name>` lists that releases leave for 1 s). Each row \
             starts on an empty keyspace (FLUSHALL); each figure is the median of \
             {UNCONTENDED_ROUNDS} rounds over all rows, {UNCONTENDED_SECS} s per row and round."
        ),
        &t,
    );
}

fn report_contended(r: &Results, report: &mut Report) {
    let mut t = Table::new(&[
        "clients",
        "hold",
        "protocol",
        "acq/s",
        "vs python-redis-lock",
        "p50",
        "p99",
        "cmds/acq",
        "server CPU µs/acq",
        "min/max per client",
    ]);
    for c in &r.con {
        let py = r
            .con
            .iter()
            .find(|d| {
                d.clients == c.clients && d.hold_ms == c.hold_ms && d.who == Proto::PyLock.label()
            })
            .unwrap();
        t.row(vec![
            c.clients.to_string(),
            format!("{} ms", c.hold_ms),
            c.who.clone(),
            format!("{:.0}", c.acq_per_sec),
            ratio(c.acq_per_sec / py.acq_per_sec),
            fmt_us(c.lat.q(0.5)),
            fmt_us(c.lat.q(0.99)),
            fmt_count(c.cmds_per_acq),
            format!("{:.1}", c.cpu_us),
            format!(
                "{}/{} ({:.2})",
                c.min_per_client,
                c.max_per_client,
                c.min_per_client as f64 / c.max_per_client.max(1) as f64
            ),
        ]);
    }
    report.section(
        "2. N clients on one lock",
        "Each client (a thread with its own connection) loops: acquire (waiting the protocol's \
         way), hold, release. Latency: from the start of the acquire to holding the lock. \
         cmds/acq: `total_commands_processed` delta / acquisitions (Redis also counts the commands \
         a Lua script runs). Server CPU: redis-server's utime+stime over the window / \
         acquisitions. Fairness: fewest/most acquisitions of any one client. The python-redis-lock \
         rows reproduce its protocol in this client (SET NX EX, BLPOP lock-signal, EVALSHA unlock); the \
         \"real library\" rows run python-redis-lock 4.0.1 itself in CPython threads, which also send \
         a GET before each acquire. redis-py's protocol sleeps 0.1 s between attempts; the floor \
         spins on SET NX on `floor:<name>` (nothing wakes it). Client threads and the server share the machine's cores.",
        &t,
    );
}

fn report_expiry(r: &Results, report: &mut Report) {
    let mut t = Table::new(&["waiter", "trials", "p50", "p99", "max"]);
    for (p, v) in &r.expiry {
        let d = Dist::new(v.clone());
        t.row(vec![
            p.label().into(),
            d.0.len().to_string(),
            format!("{:.1} ms", d.q(0.5)),
            format!("{:.1} ms", d.q(0.99)),
            format!("{:.1} ms", d.q(1.0)),
        ]);
    }
    report.section(
        "3. Expiry handoff: the holder never releases",
        &format!(
            "A holder takes a lock with a 1 s lease and never releases it; a waiter of the same \
             protocol arrives at a point spread evenly over the first 0.9 s of the lease and waits \
             (rlock: `LOCK.ACQUIRE ... BLOCK 0`; python-redis-lock: SET NX EX 1 / BLPOP lock-signal \
             with its `expire`, 1 s, as the timeout). Figure: time from the lease end \
             (`PEXPIRETIME`) to the waiter holding the lock; {EXPIRY_ROUNDS} rounds of \
             {EXPIRY_TRIALS} locks taken 10 ms apart. With rlock loaded, python-redis-lock \
             waiters are also signalled when Redis's active expiry removes the key (without the \
             module only their BLPOP timeout ends the wait)."
        ),
        &t,
    );
}

fn report_memory(m: &Memory, report: &mut Report) {
    let n = m.waiters;
    let mb = |x: f64| format!("{:.1} MB", x / 1e6);
    let bytes = |x: Option<f64>| x.map(|b| format!("{b:.0} B")).unwrap_or_else(|| "-".into());
    let mut t = Table::new(&[
        "clients blocked in",
        "idle",
        "command held by CLIENT PAUSE",
        "blocked",
        "after CLIENT UNBLOCK",
        "per waiter: total",
        "kept by Redis after unblock",
        "freed on unblock",
        "of which argv",
        "of which waiter state",
    ]);
    for (what, s) in [
        (format!("BLPOP, reference ({} keys)", m.locks), &m.blpop),
        (format!("LOCK.ACQUIRE BLOCK 0 ({} locks)", m.locks), &m.lock),
    ] {
        t.row(vec![
            what,
            mb(s.idle),
            s.postponed.map(mb).unwrap_or_else(|| "-".into()),
            mb(s.blocked),
            mb(s.unblocked),
            bytes(Some(s.total(n))),
            bytes(Some(s.pooled(n))),
            bytes(Some(s.released(n))),
            bytes(s.argv(n)),
            bytes(s.own(n)),
        ]);
    }
    report.section(
        &format!("4a. Memory of {n} blocked waiters"),
        "`used_memory` (median of 3 samples, taken once the client cron has trimmed every client's \
         buffers; `hz 1` during this phase) with the clients connected and idle; with their \
         LOCK.ACQUIRE parsed but held back by `CLIENT PAUSE WRITE` (Redis keeps the argv, the \
         module has not run); blocked; and right after `CLIENT UNBLOCK` of each. \
         \"Kept by Redis\": on Redis 7.0 `RedisModule_BlockClient` takes two client objects (each \
         with a 16 KB reply buffer) from a temp-client pool; they return to the pool on unblock and \
         the server cron frees them later, 50 per run. \"Waiter state\" = freed on unblock − argv: \
         the module's queue entry plus Redis's blocked-client handle. BLPOP is Redis's own blocking, \
         for comparison (its argv and per-key bookkeeping are all in \"freed on unblock\").",
        &t,
    );
}

fn report_release(r: &Results, report: &mut Report) {
    let mut t = Table::new(&[
        "waiters queued",
        "LOCK.RELEASE µs/call",
        "LOCK.ACQUIRE (blocking) µs/call",
        "server CPU µs/cycle",
        "release vs 1 waiter",
    ]);
    for c in &r.costs {
        t.row(vec![
            c.queued.to_string(),
            format!("{:.2}", c.release_us),
            format!("{:.2}", c.acquire_us),
            format!("{:.2}", c.cpu_us_per_cycle),
            ratio(c.release_us / r.costs[0].release_us),
        ]);
    }
    report.section(
        "4b. Release with a long queue",
        &format!(
            "One lock per row; the holder releases (the head of the line gets the lock) and queues \
             again at the tail in the same write, so every release finds the same number of \
             waiters. Both rows' clients are connected throughout and measured in alternating chunks \
             of {RING_CYCLES} cycles, {RING_ROUNDS} each (median chunk shown): commandstats per call, \
             server CPU per release + handoff + requeue cycle."
        ),
        &t,
    );
}

fn report_targets(r: &Results, report: &mut Report) {
    let mut t = Table::new(&["target", "measured", "result"]);
    for pipelined in [false, true] {
        let mode = if pipelined {
            "pipelined"
        } else {
            "one at a time"
        };
        let rl = r.unc(Proto::Rlock, pipelined).server_us;
        let py = r.unc(Proto::PyLock, pipelined).server_us;
        let fl = r.unc(Proto::Floor, pipelined).server_us;
        t.row(vec![
            format!("uncontended server time ≤ 0.3× python-redis-lock ({mode})"),
            format!("{rl:.2} / {py:.2} µs = {}", ratio(rl / py)),
            verdict(rl / py <= 0.3, "limit 0.30×".into()),
        ]);
        t.row(vec![
            format!("uncontended server time ≤ 2× floor ({mode})"),
            format!("{rl:.2} / {fl:.2} µs = {}", ratio(rl / fl)),
            verdict(rl / fl <= 2.0, "limit 2.00×".into()),
        ]);
    }
    let c8 = |who: &str| {
        r.con
            .iter()
            .find(|c| c.clients == 8 && c.hold_ms == 0 && c.who == who)
    };
    let r8 = c8(Proto::Rlock.label()).unwrap();
    let ratios: Vec<f64> = r.repeats.iter().map(|(rl, py)| rl / py).collect();
    let median = Dist::new(ratios.clone()).q(0.5);
    let each: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
    t.row(vec![
        "8 clients, hold 0: acq/s ≥ 3× python-redis-lock (protocol)".into(),
        format!(
            "median {} of {} alternating runs ({})",
            ratio(median),
            ratios.len(),
            each.join(", ")
        ),
        verdict(median >= 3.0, "limit 3.00×".into()),
    ]);
    if let Some(p8) = c8("python-redis-lock (real library)") {
        t.row(vec![
            "8 clients, hold 0: acq/s ≥ 3× python-redis-lock (real library)".into(),
            format!(
                "{:.0} / {:.0} = {}",
                r8.acq_per_sec,
                p8.acq_per_sec,
                ratio(r8.acq_per_sec / p8.acq_per_sec)
            ),
            verdict(r8.acq_per_sec >= 3.0 * p8.acq_per_sec, "limit 3.00×".into()),
        ]);
    }
    t.row(vec![
        "8 clients, hold 0: ≤ 2.05 commands per acquisition".into(),
        format!("{:.3}", r8.cmds_per_acq),
        verdict(r8.cmds_per_acq <= 2.05, "limit 2.05".into()),
    ]);
    let fair = r8.min_per_client as f64 / r8.max_per_client as f64;
    t.row(vec![
        "8 clients, hold 0: min ≥ 0.8× max acquisitions per client".into(),
        format!("{}/{} = {fair:.3}", r8.min_per_client, r8.max_per_client),
        verdict(fair >= 0.8, "limit 0.80".into()),
    ]);
    let rex = Dist::new(r.expiry[0].1.clone()).q(0.99);
    t.row(vec![
        "expiry handoff p99 ≤ 5 ms after the deadline (rlock waiter)".into(),
        format!("{rex:.1} ms"),
        verdict(rex <= 5.0, "limit 5 ms".into()),
    ]);
    let (one, many) = (&r.costs[0], &r.costs[1]);
    let rel = many.release_us / one.release_us;
    t.row(vec![
        format!("release cost, {} vs 1 waiter queued ≤ 1.5×", many.queued),
        format!(
            "{:.2} / {:.2} µs = {}",
            many.release_us,
            one.release_us,
            ratio(rel)
        ),
        verdict(rel <= 1.5, "limit 1.50×".into()),
    ]);
    let m = r.mem.as_ref().unwrap();
    let n = m.waiters;
    let own = m.lock.own(n).unwrap();
    t.row(vec![
        "module memory per blocked waiter ≤ 256 B beyond what Redis keeps per client".into(),
        format!(
            "{own:.0} B (module queue entry + Redis's blocked handle); Redis's temp clients: {:.0} B; BLPOP waiter: {:.0} B",
            m.lock.pooled(n),
            m.blpop.released(n)
        ),
        verdict(own <= 256.0, "limit 256 B".into()),
    ]);
    report.section("Targets (issue 3)", "", &t);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let module = std::env::var_os("RLOCK_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/librlock.so"));
    assert!(
        module.exists(),
        "{} not built: run `cargo build --release` first",
        module.display()
    );
    let nofile = raise_nofile(WAITERS as u64 + 1000);
    let waiters = WAITERS.min(nofile.saturating_sub(200) as usize);
    if waiters < WAITERS {
        eprintln!("bench: open-file limit {nofile}: using {waiters} waiters instead of {WAITERS}");
    }
    let server = Server::start(&module.canonicalize().unwrap(), waiters + 100);
    let mut admin = server.conn();
    let shas = load_scripts(&mut admin);
    let started = Instant::now();
    let machine = machine(&mut admin, &root);
    print!("rlock benchmark\n\n{machine}");
    let mut report = Report(String::new());
    let mut r = Results::default();

    if wanted("uncontended") {
        let mut rounds: Vec<Vec<Uncontended>> = Vec::new();
        for _ in 0..UNCONTENDED_ROUNDS {
            let mut round = Vec::new();
            for pipelined in [false, true] {
                for p in PROTOS.into_iter().chain([Proto::FloorOnLockKeys]) {
                    round.push(uncontended(&server, &shas, p, pipelined));
                }
            }
            rounds.push(round);
        }
        r.unc = median_uncontended(&rounds);
        report_uncontended(&r, &mut report);
    }
    if wanted("contended") {
        for clients in CLIENT_COUNTS {
            for hold in HOLDS_MS {
                for p in PROTOS {
                    r.con.push(contended(&server, &shas, p, clients, hold));
                }
                if clients == 8 {
                    r.con
                        .extend(contended_real_python(&server, &root, clients, hold));
                }
            }
        }
        report_contended(&r, &mut report);
        let acq = |p: Proto| {
            r.con
                .iter()
                .find(|c| c.clients == 8 && c.hold_ms == 0 && c.who == p.label())
                .map(|c| c.acq_per_sec)
        };
        if let (Some(rl), Some(py)) = (acq(Proto::Rlock), acq(Proto::PyLock)) {
            r.repeats.push((rl, py));
        }
        for _ in 1..TARGET_RUNS {
            let rl = contended(&server, &shas, Proto::Rlock, 8, 0).acq_per_sec;
            let py = contended(&server, &shas, Proto::PyLock, 8, 0).acq_per_sec;
            r.repeats.push((rl, py));
        }
    }
    if wanted("expiry") {
        for p in [Proto::Rlock, Proto::PyLock] {
            r.expiry.push((p, expiry_handoff(&server, &shas, p)));
        }
        report_expiry(&r, &mut report);
    }
    if wanted("memory") {
        let m = waiter_memory(&server, waiters, WAITER_LOCKS);
        report_memory(&m, &mut report);
        r.mem = Some(m);
    }
    if wanted("release") {
        r.costs = release_cost(&server, &[1, waiters], RING_ROUNDS, RING_CYCLES);
        report_release(&r, &mut report);
    }
    let total = started.elapsed().as_secs_f64();
    if only().is_some() {
        println!("\nbenchmark time: {total:.0} s (RLOCK_BENCH_ONLY: docs not written)");
        return;
    }
    report_targets(&r, &mut report);
    println!("\nbenchmark time: {total:.0} s");

    let docs = root.join("docs");
    fs::create_dir_all(&docs).unwrap();
    write_svg(&docs.join("bench.svg"), &r.con, &r.expiry);
    let scale = if time_scale() != 1.0 {
        format!(" (RLOCK_BENCH_TIME={})", time_scale())
    } else {
        String::new()
    };
    let md = format!(
        "# Benchmarks\n\n\
         Latest output of `make bench` ([examples/bench.rs](../examples/bench.rs)), which starts its \
         own redis-server with the module loaded and runs every workload against it. The \
         benchmark is not a test: CI does not run it and nothing depends on its timings.\n\n\
         ## Machine\n\n{machine}- Benchmark wall time: {total:.0} s{scale}\n\n\
         ![acquire latency distributions](bench.svg)\n\n\
         ## Results\n{}",
        report.0
    );
    fs::write(docs.join("bench.md"), md).unwrap();
    println!("wrote docs/bench.md and docs/bench.svg");
}
