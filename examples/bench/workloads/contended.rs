//! Workload 4, contended: N clients on one lock, each looping acquire (waiting the protocol's
//! way), hold, release; acquisitions/s, acquire latency, commands per acquisition, server CPU,
//! fairness. Also the real python-redis-lock library under the same load, through
//! `scripts/bench_pylock.py` in `.venv`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::protocols::{Client, Proto, Shas, PROTOS};
use crate::server::{info_u64, ServerExt};
use crate::stats::Dist;
use crate::{secs, time_scale, CLIENT_COUNTS, CONTENDED_SECS, HOLDS_MS, TTL_SECS, WARMUP_SECS};

/// The label of the real-library rows.
pub const REAL_PYTHON: &str = "python-redis-lock (real library)";

pub struct Contended {
    /// The protocol's label, or `REAL_PYTHON`.
    pub who: String,
    pub clients: usize,
    pub hold_ms: u64,
    pub acq_per_sec: f64,
    /// Acquire latency, µs.
    pub lat: Dist,
    pub cmds_per_acq: f64,
    /// Server CPU time per acquisition, µs.
    pub cpu_us: f64,
    pub min_per_client: u64,
    pub max_per_client: u64,
}

/// Every protocol at each client count and hold time; with 8 clients the real library too.
pub fn run(server: &Server, shas: &Shas, root: &Path) -> Vec<Contended> {
    let mut out = Vec::new();
    for clients in CLIENT_COUNTS {
        for hold in HOLDS_MS {
            for p in PROTOS {
                out.push(contended(server, shas, p, clients, hold));
            }
            if clients == 8 {
                out.extend(contended_real_python(server, root, clients, hold));
            }
        }
    }
    out
}

/// `clients` clients of `proto` on one lock, holding it `hold_ms`: a warm-up, then the window.
pub fn contended(
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
                let (mut count, mut lat) = (0u64, Dist::new());
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
                        lat.record(waited.as_secs_f64() * 1e6);
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
    let mut lat = Dist::new();
    for w in workers {
        let (n, l) = w.join().expect("client thread");
        counts.push(n);
        lat.add(&l);
    }
    let acquisitions = (acq1 - acq0) as f64;
    Contended {
        who: proto.label().into(),
        clients,
        hold_ms,
        acq_per_sec: acquisitions / elapsed,
        lat,
        cmds_per_acq: (cmds1 - cmds0) as f64 / acquisitions,
        cpu_us: cpu * 1e6 / acquisitions,
        min_per_client: *counts.iter().min().unwrap(),
        max_per_client: *counts.iter().max().unwrap(),
    }
}

/// The real python-redis-lock library, through `scripts/bench_pylock.py`; `None` without the
/// venv.
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
        .arg(server.socket())
        .args(["--name", &format!("real-{clients}-{hold_ms}")])
        .args(["--clients", &clients.to_string()])
        .args(["--hold-ms", &hold_ms.to_string()])
        .args(["--seconds", &(CONTENDED_SECS * time_scale()).to_string()])
        .args(["--warmup", &(WARMUP_SECS * time_scale()).to_string()])
        .args(["--expire", &TTL_SECS.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
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
        who: REAL_PYTHON.into(),
        clients,
        hold_ms,
        acq_per_sec: acquisitions / kv["seconds"].parse::<f64>().unwrap(),
        lat: list("latencies_us").into_iter().collect(),
        cmds_per_acq: kv["commands"].parse::<f64>().unwrap() / acquisitions,
        cpu_us: kv["server_cpu"].parse::<f64>().unwrap() * 1e6 / acquisitions,
        min_per_client: per_client.iter().cloned().fold(f64::MAX, f64::min) as u64,
        max_per_client: per_client.iter().cloned().fold(0.0, f64::max) as u64,
    })
}
