//! The report: tables that read well both as Markdown and on a terminal, one per workload in
//! the order they run, collected for docs/bench.md while they print.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::protocols::Proto;
use crate::stats::{fmt_count, fmt_us, Dist};
use crate::targets;
use crate::workloads::contended::Contended;
use crate::workloads::memory::Memory;
use crate::workloads::mixed::Mixed;
use crate::workloads::pycycle::PyCycle;
use crate::workloads::release::ReleaseCost;
use crate::workloads::tax::TaxRun;
use crate::workloads::uncontended::Uncontended;
use crate::{
    EXPIRY_ROUNDS, EXPIRY_TRIALS, MIXED_CLIENTS, PIPELINE_CYCLES, RING_CYCLES, RING_ROUNDS,
    TAX_KEYS, TAX_ROUNDS, TAX_SECS, UNCONTENDED_ROUNDS, UNCONTENDED_SECS,
};

/// Everything measured, for the tables, the targets and the plot.
#[derive(Default)]
pub struct Results {
    pub tax: Option<TaxRun>,
    pub pycycle: Option<PyCycle>,
    pub unc: Vec<Uncontended>,
    /// The uncontended rows with a replica attached.
    pub unc_replica: Vec<Uncontended>,
    pub con: Vec<Contended>,
    /// Per protocol, the expiry handoff delays in ms.
    pub expiry: Vec<(Proto, Dist)>,
    pub mem: Option<Memory>,
    pub costs: Vec<ReleaseCost>,
    /// `None` when not run or without the venv.
    pub mixed: Option<Mixed>,
    /// Acquisitions/s of (rlock, python-redis-lock protocol) with 8 clients, hold 0, in
    /// alternating repeat runs (the table's run first).
    pub repeats: Vec<(f64, f64)>,
}

impl Results {
    pub fn unc(&self, p: Proto, pipelined: bool) -> &Uncontended {
        self.unc
            .iter()
            .find(|u| u.proto == p && u.pipelined == pipelined)
            .unwrap()
    }
}

/// A Markdown table that also reads well on a terminal.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
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
#[derive(Default)]
pub struct Report(pub String);

impl Report {
    pub fn section(&mut self, title: &str, intro: &str, table: &Table) {
        let mut s = format!("\n### {title}\n\n");
        if !intro.is_empty() {
            s += intro;
            s += "\n\n";
        }
        s += &table.render();
        self.emit(s);
    }

    /// One more table in the current section, after a paragraph of its own.
    pub fn table(&mut self, intro: &str, table: &Table) {
        self.emit(format!("\n{intro}\n\n{}", table.render()));
    }

    fn emit(&mut self, s: String) {
        print!("{s}");
        std::io::stdout().flush().unwrap();
        self.0 += &s;
    }
}

pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

pub fn verdict(ok: bool, note: String) -> String {
    if ok {
        format!("met ({note})")
    } else {
        format!("**MISSED** ({note})")
    }
}

pub fn report_tax(t: &TaxRun, report: &mut Report) {
    let mut tb = Table::new(&[
        "command",
        "µs/call without module",
        "with module",
        "ratio",
        "target",
        "server CPU µs/call without",
        "with",
        "ratio",
    ]);
    for row in &t.rows {
        let x = row.with_us / row.without_us;
        let limit = targets::tax_limit(row.cmd);
        tb.row(vec![
            row.cmd.to_uppercase(),
            format!("{:.3}", row.without_us),
            format!("{:.3}", row.with_us),
            ratio(x),
            verdict(x <= limit, format!("limit {limit:.2}×")),
            format!("{:.3}", row.without_cpu),
            format!("{:.3}", row.with_cpu),
            ratio(row.with_cpu / row.without_cpu),
        ]);
    }
    report.section(
        "1. Tax on commands unrelated to locks",
        &format!(
            "The same server process measures each command without the module (`MODULE UNLOAD \
             rlock`) and with it (`MODULE LOAD` of the same build) back to back, the order \
             flipping from one pair to the next; the module is loaded afresh for each \
             measurement. Keyspace: {TAX_KEYS} strings `k:<i>` and \
             {TAX_KEYS} one-element lists `l:<i>`; each command walks the keys in order, pipelined \
             ×{PIPELINE_CYCLES}, for {TAX_SECS} s per command and side (after a warm-up). \
             DEL is sent as DEL `k:<i>` + SET `k:<i>` pairs, so each DEL deletes a key (only \
             DEL's time is counted; its CPU column is per pair); EXPIRE sets 3600 s on an \
             existing key. µs/call: `usec`/`calls` of the command in `INFO commandstats` \
             (`CONFIG RESETSTAT` before each measurement); that time is the command's own \
             execution with the keyspace events it raises, not the module's command filter, \
             which runs before it: the server CPU columns (utime+stime of redis-server per call, \
             /proc/<pid>/stat, 10 ms ticks) include that and the I/O. Each figure is the median of \
             {TAX_ROUNDS} rounds over all commands. `MODULE UNLOAD` refusals (retried): {}.",
            t.refused
        ),
        &tb,
    );
}

pub fn report_pycycle(p: &PyCycle, report: &mut Report) {
    let mut t = Table::new(&["figure", "without module", "with module", "ratio", "target"]);
    let x = p.with_us / p.without_us;
    let limit = targets::PYCYCLE_LIMIT;
    t.row(vec![
        "server µs/cycle (commandstats)".into(),
        format!("{:.2}", p.without_us),
        format!("{:.2}", p.with_us),
        ratio(x),
        verdict(x <= limit, format!("limit {limit:.2}×")),
    ]);
    t.row(vec![
        "server CPU µs/cycle".into(),
        format!("{:.2}", p.without_cpu),
        format!("{:.2}", p.with_cpu),
        ratio(p.with_cpu / p.without_cpu),
        "-".into(),
    ]);
    report.section(
        "2. python-redis-lock's uncontended cycle with and without the module",
        &format!(
            "python-redis-lock's protocol (SET `lock:<n>` <id> NX EX 10 + EVALSHA of its unlock \
             script), spoken by the benchmark's client on distinct names, pipelined \
             ×{PIPELINE_CYCLES}, on the same server without and with the module back to back (as \
             in 1; each measurement starts on an empty keyspace). Server µs/cycle: `usec` of SET \
             and EVALSHA in `INFO commandstats` / cycles (with the module, the keyspace events of \
             the script's DEL and the python-attempt bookkeeping are inside them; the command \
             filter is not, the CPU row has it). Median of {TAX_ROUNDS} such pairs of {TAX_SECS} s \
             per side. `MODULE UNLOAD` refusals (retried): {}.",
            p.refused
        ),
        &t,
    );
}

pub fn report_mixed(m: &Mixed, report: &mut Report) {
    let mut t = Table::new(&[
        "client",
        "acquisitions",
        "acq/s",
        "failed acquires",
        "overlaps",
    ]);
    let mut n = [0, 0];
    for c in &m.clients {
        n[c.python as usize] += 1;
        t.row(vec![
            if c.python {
                format!("python-redis-lock {}", n[1])
            } else {
                format!("rlock {}", n[0])
            },
            c.acquisitions.to_string(),
            format!("{:.0}", c.acquisitions as f64 / m.seconds),
            c.timeouts.to_string(),
            c.overlaps.to_string(),
        ]);
    }
    report.section(
        "5. Mixed clients on one hot lock",
        &format!(
            "{MIXED_CLIENTS} module clients (threads of the benchmark: `LOCK.ACQUIRE hot <token> \
             10 BLOCK 5000`) and {MIXED_CLIENTS} real python-redis-lock 4.0.1 clients (CPython \
             threads, `scripts/bench_mixed.py`: `Lock(conn, \"hot\", expire=10).acquire(timeout=5)`) \
             share one lock for {:.0} s, each holding it 0–1 ms (uniformly random) per \
             acquisition. Failed acquires: python's `acquire()` returned False (5 s without the \
             lock); the module's BLOCK timeout (a nil reply). Overlaps: each holder INCRs \
             `mixed:inside` right after acquiring and counts any reply but 1, DECRs it before \
             releasing; a release that finds the lock not its own counts too.",
            m.seconds
        ),
        &t,
    );
    report.table("Targets:", &targets::mixed_targets(m));
}

/// Table 3's rows for `rows` (which must hold python-redis-lock's and the floor's rows of the
/// same modes).
fn uncontended_table(rows: &[Uncontended]) -> Table {
    let find = |p: Proto, pipelined: bool| {
        rows.iter()
            .find(|u| u.proto == p && u.pipelined == pipelined)
            .map_or(f64::NAN, |u| u.server_us)
    };
    let mut t = Table::new(&[
        "protocol",
        "mode",
        "cycles/s (client)",
        "server µs/cycle",
        "vs python-redis-lock",
        "vs floor",
        "server CPU µs/cycle",
    ]);
    for u in rows {
        let py = find(Proto::PyLock, u.pipelined);
        let floor = find(Proto::Floor, u.pipelined);
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
    t
}

pub fn report_uncontended(r: &Results, report: &mut Report) {
    let t = uncontended_table(&r.unc);
    report.section(
        "3. Uncontended acquire + release on distinct names",
        &format!(
            "Server µs/cycle: `usec` of the cycle's two top-level commands in `INFO commandstats` \
             (rlock: LOCK.ACQUIRE ... BLOCK 0 + LOCK.RELEASE; python-redis-lock: SET NX EX + \
             EVALSHA unlock script; redis-py: SET NX PX + EVALSHA release script; floor: SET NX PX \
             + DEL on `floor:<name>`) / cycles. The floor stays off `lock:<name>` keys because the \
             module reacts to them: a `SET lock:<name>` counts as a python-redis-lock attempt for \
             2 s, and a DEL of one makes the module look at the lock after the command (and \
             signal it, a python-redis-lock client having tried it); the last row shows what the \
             same bare commands cost on `lock:<name>`. The python-redis-lock and redis-py rows pay \
             that reaction too, as they would on any server with rlock loaded. The rlock rows start \
             2 s after the rows before them, once their attempts have ended. Server CPU: utime+stime of redis-server from /proc/<pid>/stat per \
             cycle (includes socket I/O, the event loop, module timers, and expiring the \
             `lock-signal:<name>` lists that releases leave for 1 s). Each row \
             starts on an empty keyspace (FLUSHALL); each figure is the median of \
             {UNCONTENDED_ROUNDS} rounds over all rows, {UNCONTENDED_SECS} s per row and round."
        ),
        &t,
    );
}

pub fn report_uncontended_replica(r: &Results, report: &mut Report) {
    let t = uncontended_table(&r.unc_replica);
    report.section(
        "3b. The same with a replica attached",
        &format!(
            "As table 3, for rlock, python-redis-lock and the floor, on a second primary (TCP, \
             the module loaded) with a replica attached (no module), so that every write is \
             also propagated: the module's writes go out as plain `SET ... PXAT` / `DEL`. Median \
             of {UNCONTENDED_ROUNDS} rounds."
        ),
        &t,
    );
}

pub fn report_contended(r: &Results, report: &mut Report) {
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
        "4. N clients on one lock",
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

pub fn report_expiry(r: &Results, report: &mut Report) {
    let mut t = Table::new(&["waiter", "trials", "p50", "p99", "max"]);
    for (p, d) in &r.expiry {
        t.row(vec![
            p.label().into(),
            d.len().to_string(),
            format!("{:.1} ms", d.q(0.5)),
            format!("{:.1} ms", d.q(0.99)),
            format!("{:.1} ms", d.max()),
        ]);
    }
    report.section(
        "6. Expiry handoff: the holder never releases",
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

pub fn report_memory(m: &Memory, report: &mut Report) {
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
        &format!("7a. Memory of {n} blocked waiters"),
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

pub fn report_release(r: &Results, report: &mut Report) {
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
        "7b. Release with a long queue",
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
