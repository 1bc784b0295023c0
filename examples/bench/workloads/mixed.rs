//! Workload 5, mixed: one hot lock shared by `MIXED_CLIENTS` module clients (Rust threads:
//! `LOCK.ACQUIRE hot <token> 10 BLOCK 5000`) and as many real python-redis-lock clients
//! (`scripts/bench_mixed.py` in `.venv`: `Lock(conn, "hot", expire=10).acquire(timeout=5)`),
//! each holding it 0–1 ms (uniformly random) per acquisition, for `MIXED_SECS`. Per client:
//! acquisitions, failed acquires (python: `acquire()` returned False; module: a nil reply, the
//! BLOCK timeout) and overlaps: every holder INCRs `mixed:inside` right after acquiring (a reply
//! other than 1 means someone else is inside) and DECRs it before releasing; a release that
//! finds the lock not its own counts too.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::Value;

use crate::common::Server;
use crate::server::ServerExt;
use crate::{secs, time_scale, MIXED_CLIENTS, MIXED_SECS, TTL_SECS};

const NAME: &str = "hot";
const INSIDE: &str = "mixed:inside";
/// The longest hold, µs.
const HOLD_MAX_US: u64 = 1000;
/// Module clients' `BLOCK` and python's `acquire(timeout=)`.
const WAIT_SECS: u64 = 5;

pub struct MixedClient {
    pub python: bool,
    pub acquisitions: u64,
    /// Python: `acquire()` returned False; module: LOCK.ACQUIRE replied nil.
    pub timeouts: u64,
    pub overlaps: u64,
}

pub struct Mixed {
    pub seconds: f64,
    pub clients: Vec<MixedClient>,
}

impl Mixed {
    fn of(&self, python: bool) -> impl Iterator<Item = &MixedClient> {
        self.clients.iter().filter(move |c| c.python == python)
    }

    /// Acquisitions of the least-served python client / the module clients' average.
    pub fn least_python_vs_module(&self) -> (u64, f64) {
        let least = self.of(true).map(|c| c.acquisitions).min().unwrap_or(0);
        let n = self.of(false).count().max(1) as f64;
        let avg = self.of(false).map(|c| c.acquisitions).sum::<u64>() as f64 / n;
        (least, avg)
    }

    pub fn timeouts(&self, python: bool) -> u64 {
        self.of(python).map(|c| c.timeouts).sum()
    }

    pub fn overlaps(&self) -> u64 {
        self.clients.iter().map(|c| c.overlaps).sum()
    }
}

/// `None` without the venv.
pub fn run(server: &Server, root: &Path) -> Option<Mixed> {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        eprintln!(
            "bench: {} missing (scripts/setup.sh --python); skipping the mixed workload",
            python.display()
        );
        return None;
    }
    let mut admin = server.conn();
    redis::cmd("DEL")
        .arg(INSIDE)
        .arg(format!("lock:{NAME}"))
        .exec(&mut admin)
        .unwrap();
    let seconds = MIXED_SECS * time_scale();
    let mut py = Command::new(python)
        .arg(root.join("scripts/bench_mixed.py"))
        .arg("--socket")
        .arg(server.socket())
        .args(["--name", NAME, "--inside", INSIDE])
        .args(["--clients", &MIXED_CLIENTS.to_string()])
        .args(["--hold-ms", &(HOLD_MAX_US as f64 / 1000.0).to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--expire", &TTL_SECS.to_string()])
        .args(["--timeout", &WAIT_SECS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python");
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "bench_mixed.py did not start");
    let conns: Vec<_> = (0..MIXED_CLIENTS).map(|_| server.conn()).collect();
    // Go: python's clients and ours start together.
    writeln!(py.stdin.take().unwrap(), "go").unwrap();
    let end = Instant::now() + secs(MIXED_SECS);
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, con)| thread::spawn(move || module_client(con, id, end)))
        .collect();
    let mut clients: Vec<MixedClient> = workers
        .into_iter()
        .map(|w| w.join().expect("client thread"))
        .collect();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(py.wait().unwrap().success(), "bench_mixed.py failed");
    let list = |key: &str| json_list(&line, key);
    let (acq, fail, over) = (list("acquisitions"), list("failures"), list("overlaps"));
    for i in 0..acq.len() {
        clients.push(MixedClient {
            python: true,
            acquisitions: acq[i],
            timeouts: fail[i],
            overlaps: over[i],
        });
    }
    Some(Mixed { seconds, clients })
}

/// One module client until `end`: acquire (blocking up to `WAIT_SECS`), check it is alone,
/// hold, release.
fn module_client(mut con: redis::Connection, id: usize, end: Instant) -> MixedClient {
    let token = format!("mixed-module-{id}");
    let mut rng = StdRng::seed_from_u64(id as u64);
    let mut c = MixedClient {
        python: false,
        acquisitions: 0,
        timeouts: 0,
        overlaps: 0,
    };
    while Instant::now() < end {
        let reply: Value = redis::cmd("LOCK.ACQUIRE")
            .arg(NAME)
            .arg(&token)
            .arg(TTL_SECS)
            .arg("BLOCK")
            .arg(WAIT_SECS * 1000)
            .query(&mut con)
            .unwrap();
        match reply {
            Value::Okay => {}
            Value::Nil => {
                c.timeouts += 1;
                continue;
            }
            other => panic!("LOCK.ACQUIRE replied {other:?}"),
        }
        c.acquisitions += 1;
        let inside: i64 = redis::cmd("INCR").arg(INSIDE).query(&mut con).unwrap();
        if inside != 1 {
            c.overlaps += 1;
        }
        thread::sleep(Duration::from_micros(rng.random_range(0..=HOLD_MAX_US)));
        redis::cmd("DECR").arg(INSIDE).exec(&mut con).unwrap();
        let released: i64 = redis::cmd("LOCK.RELEASE")
            .arg(NAME)
            .arg(&token)
            .query(&mut con)
            .unwrap();
        if released != 1 {
            c.overlaps += 1;
        }
    }
    c
}

/// The integers of the list `"key": [..]` in the one-line JSON object the script prints.
fn json_list(json: &str, key: &str) -> Vec<u64> {
    let pat = format!("\"{key}\": [");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let body = &json[at..at + json[at..].find(']').unwrap()];
    body.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}
