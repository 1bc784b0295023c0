//! Real `redis-server` processes for the integration tests: the built module loaded, a unix
//! socket (or an OS-chosen TCP port) in a temp dir, killed on drop. Waiting is always for a
//! reply or for `blocked_clients`, with a deadline; never a fixed sleep. The server binary is
//! `$REDIS_SERVER` when set (any Redis 7.0+ or Valkey build, see `make test-matrix`), else
//! `redis-server` from `PATH`.
#![allow(dead_code)]

pub mod raw;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any wait may take: 10 s, or `RLOCK_TEST_DEADLINE_SECS` as set when the tests are
/// *built* (a slow server, e.g. under valgrind; cargo rebuilds the tests when it changes).
pub const DEADLINE: Duration = Duration::from_secs(deadline_secs());

const fn deadline_secs() -> u64 {
    let Some(s) = option_env!("RLOCK_TEST_DEADLINE_SECS") else {
        return 10;
    };
    let (b, mut i, mut n) = (s.as_bytes(), 0, 0u64);
    assert!(!b.is_empty(), "RLOCK_TEST_DEADLINE_SECS: whole seconds");
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "RLOCK_TEST_DEADLINE_SECS: whole seconds"
        );
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// The built module: `$RLOCK_MODULE`, else `target/release/librlock.so`, else debug.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("RLOCK_MODULE") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("librlock.so");
        if p.exists() {
            return p;
        }
    }
    panic!("librlock.so not built: run `cargo build --release` (or `make test`) first");
}

/// The server binary: `$REDIS_SERVER` when set and non-empty, else `redis-server` from `PATH`
/// (the same rule as tests/python/conftest.py).
pub fn server_binary() -> String {
    match std::env::var("REDIS_SERVER") {
        Ok(p) if !p.is_empty() => p,
        _ => "redis-server".to_string(),
    }
}

pub struct Server {
    child: Child,
    pub dir: PathBuf,
    /// `redis+unix://...` or `redis://127.0.0.1:port`
    pub url: String,
    pub port: Option<u16>,
    /// Started under `RLOCK_SERVER_WRAPPER`: stopped by SIGTERM (a clean exit) on drop.
    wrapped: bool,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rlock-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A free TCP port on loopback, as the OS assigns it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Options {
    pub module: bool,
    pub tcp: bool,
    pub args: Vec<String>,
    pub dir: Option<PathBuf>,
    /// Start the server with this stack size (KB, `ulimit -s`), to show that no recursion a
    /// client controls can overflow it.
    pub stack_kb: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            module: true,
            tcp: false,
            args: Vec::new(),
            dir: None,
            stack_kb: None,
        }
    }
}

impl Server {
    /// A server with the module on a unix socket.
    pub fn start() -> Server {
        Server::with(Options::default())
    }

    pub fn with(opts: Options) -> Server {
        let dir = opts.dir.clone().unwrap_or_else(temp_dir);
        // `RLOCK_SERVER_WRAPPER`, e.g. "valgrind --leak-check=full", prefixes the command line
        // (wrapper, then the server binary); `{test}` in it becomes the running test's name (for
        // per-test log files).
        let test = thread::current()
            .name()
            .unwrap_or("unnamed")
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let wrapper: Vec<String> = std::env::var("RLOCK_SERVER_WRAPPER")
            .map(|w| {
                w.split_whitespace()
                    .map(|a| a.replace("{test}", &test))
                    .collect()
            })
            .unwrap_or_default();
        let binary = server_binary();
        let mut line: Vec<String> = wrapper.clone();
        line.push(binary.clone());
        if let Some(kb) = opts.stack_kb {
            let mut sh = vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("ulimit -s {kb} && exec \"$@\""),
                "sh".to_string(),
            ];
            sh.append(&mut line);
            line = sh;
        }
        let mut cmd = Command::new(&line[0]);
        cmd.args(&line[1..]);
        cmd.arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&dir)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--enable-debug-command")
            .arg("yes")
            .arg("--enable-module-command")
            .arg("yes")
            .arg("--repl-diskless-sync-delay")
            .arg("0");
        let (url, port) = if opts.tcp {
            let port = free_port();
            cmd.arg("--port").arg(port.to_string());
            (format!("redis://127.0.0.1:{port}"), Some(port))
        } else {
            let sock = dir.join("redis.sock");
            cmd.arg("--port")
                .arg("0")
                .arg("--unixsocket")
                .arg(&sock)
                .arg("--unixsocketperm")
                .arg("700");
            (format!("redis+unix://{}", sock.display()), None)
        };
        if opts.module {
            cmd.arg("--loadmodule").arg(module_path());
        }
        cmd.args(&opts.args);
        cmd.stdout(Stdio::from(
            std::fs::File::create(dir.join("server.log")).unwrap(),
        ));
        cmd.stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {binary:?} ({e}): install redis-server (scripts/setup.sh) \
                 or set REDIS_SERVER to a server binary"
            )
        });
        let server = Server {
            child,
            dir,
            url,
            port,
            wrapped: !wrapper.is_empty(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(mut c) =
                redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
            {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "redis-server did not start: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The unix socket's path, for a server started without `tcp`.
    pub fn unix_socket(&self) -> Option<PathBuf> {
        self.port.is_none().then(|| self.dir.join("redis.sock"))
    }

    /// Kill -9 the server, leaving its files (for restart tests).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until `INFO clients` reports exactly `n` blocked clients.
    pub fn wait_blocked(&self, n: i64) {
        let mut c = self.conn();
        let start = Instant::now();
        loop {
            let got = info_field(&mut c, "clients", "blocked_clients");
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
}

impl Drop for Server {
    fn drop(&mut self) {
        // Under a wrapper (valgrind), let the server exit by itself so the wrapper can report.
        if self.wrapped && matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let start = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && start.elapsed() < DEADLINE {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// A command running on its own connection in a thread; its reply is awaited with a deadline.
pub struct Pending<T> {
    rx: mpsc::Receiver<redis::RedisResult<T>>,
    pub id: i64,
}

pub fn spawn<T: redis::FromRedisValue + Send + 'static>(
    server: &Server,
    cmd: redis::Cmd,
) -> Pending<T> {
    let mut c = server.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(cmd.query::<T>(&mut c));
    });
    Pending { rx, id }
}

impl<T> Pending<T> {
    pub fn wait(self) -> redis::RedisResult<T> {
        self.rx
            .recv_timeout(DEADLINE)
            .expect("no reply before the deadline")
    }
}

/// Like `spawn`, for a command that blocks: returns once the server counts one more blocked
/// client.
pub fn spawn_blocked<T: redis::FromRedisValue + Send + 'static>(
    server: &Server,
    cmd: redis::Cmd,
) -> Pending<T> {
    let before = info_field(&mut server.conn(), "clients", "blocked_clients");
    let pending = spawn(server, cmd);
    server.wait_blocked(before + 1);
    pending
}

/// Options for a server with `appendonly yes` and `appendfsync always`.
pub fn aof_options(dir: Option<PathBuf>) -> Options {
    Options {
        dir,
        args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    }
}

/// `LOCK.ACQUIRE name token ttl [BLOCK ms]` as a command.
pub fn acquire(name: &str, token: &str, ttl: u64, block: Option<u64>) -> redis::Cmd {
    let mut c = redis::cmd("LOCK.ACQUIRE");
    c.arg(name).arg(token).arg(ttl);
    if let Some(ms) = block {
        c.arg("BLOCK").arg(ms);
    }
    c
}

pub fn owner(c: &mut redis::Connection, name: &str) -> Option<String> {
    redis::cmd("LOCK.OWNER").arg(name).query(c).unwrap()
}

pub fn release(c: &mut redis::Connection, name: &str, token: &str) -> i64 {
    redis::cmd("LOCK.RELEASE")
        .arg(name)
        .arg(token)
        .query(c)
        .unwrap()
}

/// Start a replica of `primary` (which must use TCP) and wait until its link is up.
pub fn replica_of(primary: &Server, module: bool) -> Server {
    let replica = Server::with(Options {
        tcp: true,
        module,
        args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.expect("tcp primary").to_string(),
        ],
        ..Options::default()
    });
    let mut c = replica.conn();
    let start = Instant::now();
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        if info.contains("master_link_status:up") {
            return replica;
        }
        assert!(start.elapsed() < DEADLINE, "replica never linked: {info}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until every replica has acknowledged the primary's writes so far.
pub fn sync_replicas(primary: &mut redis::Connection, n: i64) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(n)
        .arg(DEADLINE.as_millis() as u64)
        .query(primary)
        .unwrap();
    assert_eq!(acked, n, "replicas did not acknowledge");
}

/// What a python-redis-lock client does first when `name` is held: `SET lock:<name> <id> NX EX
/// 60`, which fails. It may then wait in `BLPOP lock-signal:<name>`, so from here on the module
/// signals that lock when it frees it (`rlock.python-signal auto`).
pub fn python_tries(c: &mut redis::Connection, name: &str) {
    let r: Option<String> = redis::cmd("SET")
        .arg(format!("lock:{name}"))
        .arg("py-attempt")
        .arg("NX")
        .arg("EX")
        .arg(60)
        .query(c)
        .unwrap();
    assert_eq!(r, None, "python_tries: lock:{name} should be held");
}

/// Start the server with `args` added, expecting it to refuse to start (a module that fails
/// to load stops the server): waits for the process to exit, with a deadline, and returns its
/// log. Panics if it is still running at the deadline.
pub fn start_fails(args: &[String]) -> String {
    let dir = temp_dir();
    let log = dir.join("server.log");
    let mut child = Command::new(server_binary())
        .args(["--save", "", "--port", "0", "--dir"])
        .arg(&dir)
        .arg("--unixsocket")
        .arg(dir.join("redis.sock"))
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server started: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "the server exited 0: {text}");
    text
}
