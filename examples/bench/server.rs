//! The redis-server under test: the test suite's launcher (tests/common) with the benchmark's
//! settings, plus what only the benchmark needs: the server's CPU time from /proc, `INFO` as a
//! map, `INFO commandstats`, bare RESP connections for thousands of clients that only block, and
//! `MODULE UNLOAD` / `MODULE LOAD` of the module on the running server (the launcher starts it
//! with `--enable-module-command yes`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use redis::Connection;

use crate::common::{self, Options, Server};

/// The module loaded, a unix socket in a temp dir, `--save '' --appendonly no`, room for
/// `maxclients` connections. Killed when dropped.
pub fn start(maxclients: usize) -> Server {
    let maxclients = maxclients.to_string();
    Server::with(Options {
        args: ["--appendonly", "no", "--maxclients", &maxclients]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
}

/// What the benchmark asks of a running server beyond what the tests do.
pub trait ServerExt {
    /// The unix socket's path.
    fn socket(&self) -> PathBuf;
    /// Server CPU time (user + system, all threads) so far, in seconds.
    fn cpu_secs(&self) -> f64;
    /// A bare connection on the unix socket.
    fn raw(&self) -> Raw;
}

impl ServerExt for Server {
    fn socket(&self) -> PathBuf {
        self.unix_socket().expect("a unix-socket server")
    }

    fn cpu_secs(&self) -> f64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of /proc/<pid>/stat; `after` starts at field 3.
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    fn raw(&self) -> Raw {
        Raw(BufReader::with_capacity(
            64,
            UnixStream::connect(self.socket()).expect("connect"),
        ))
    }
}

/// How long `MODULE UNLOAD` is retried while the server refuses it.
const UNLOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Load (`MODULE LOAD` of `$RLOCK_MODULE`, as the launcher loaded it) or unload the module,
/// unless it already is. The server refuses `MODULE UNLOAD` while one of the module's clients
/// is blocked or its timer is armed (e.g. for a look after a DEL of a `lock:<name>` key): the
/// unload is retried every 5 ms for up to 30 s. Returns how many times it was refused.
pub fn set_module(con: &mut Connection, loaded: bool) -> u32 {
    // Each entry: [name, <name>, ver, <version>, ...].
    let modules: Vec<Vec<redis::Value>> = redis::cmd("MODULE").arg("LIST").query(con).unwrap();
    let is_loaded = modules.iter().any(|m| {
        m.iter()
            .any(|v| matches!(v, redis::Value::BulkString(b) if b == b"rlock"))
    });
    if is_loaded == loaded {
        return 0;
    }
    if loaded {
        redis::cmd("MODULE")
            .arg("LOAD")
            .arg(common::module_path().to_str().expect("a UTF-8 module path"))
            .exec(con)
            .expect("MODULE LOAD");
        return 0;
    }
    let deadline = Instant::now() + UNLOAD_DEADLINE;
    let mut refused = 0;
    loop {
        match redis::cmd("MODULE").arg("UNLOAD").arg("rlock").exec(con) {
            Ok(()) => return refused,
            Err(e) => {
                refused += 1;
                assert!(Instant::now() < deadline, "MODULE UNLOAD refused: {e}");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// `INFO <section>` as a map.
pub fn info(con: &mut Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// One numeric `INFO` field.
pub fn info_u64(con: &mut Connection, section: &str, field: &str) -> u64 {
    common::info_field(con, section, field) as u64
}

/// `INFO commandstats`: command → (calls, usec).
pub fn commandstats(con: &mut Connection) -> HashMap<String, (u64, u64)> {
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

pub fn reset_stats(con: &mut Connection) {
    redis::cmd("CONFIG").arg("RESETSTAT").exec(con).unwrap();
}

/// Wait (up to 60 s) until the `INFO clients` field `field` satisfies `ok`.
pub fn await_clients(admin: &mut Connection, field: &str, ok: impl Fn(u64) -> bool) {
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

/// A bare connection speaking RESP by hand: for thousands of clients that only block.
pub struct Raw(BufReader<UnixStream>);

impl Raw {
    pub fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            write!(out, "${}\r\n{a}\r\n", a.len()).unwrap();
        }
        self.write(out.as_bytes());
    }

    /// Bytes as they are, e.g. several commands in one write.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut stream = self.0.get_ref();
        stream.write_all(bytes).unwrap();
    }

    /// One single-line reply (`+OK`, `:1`, `$-1`, ...).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.0.read_line(&mut s).unwrap();
        assert!(s.ends_with("\r\n"), "connection closed");
        s.truncate(s.len() - 2);
        s
    }
}
