//! The targets, each judged against the measured figures: those of issue 3 in the report's
//! last table; those of `tax`, `pycycle` and `mixed` in (or right after) their own tables, so
//! that `RLOCK_BENCH_ONLY` runs show them too.

use crate::protocols::Proto;
use crate::report::{ratio, verdict, Report, Results, Table};
use crate::stats::median;
use crate::workloads::contended::REAL_PYTHON;
use crate::workloads::mixed::Mixed;

/// `tax`: the highest ratio (with / without the module) of a command's server µs per call.
pub fn tax_limit(cmd: &str) -> f64 {
    match cmd {
        "del" | "expire" => 1.10,
        _ => 1.05,
    }
}

/// `pycycle`: the highest ratio of python-redis-lock's server µs per cycle.
pub const PYCYCLE_LIMIT: f64 = 1.05;

/// `mixed`: the least-served python client's acquisitions, at least this share of the module
/// clients' average.
pub const MIXED_LEAST_PYTHON: f64 = 0.2;

/// `mixed`'s targets: no failed python acquire, the least-served python client, no module
/// BLOCK timeout, no overlap.
pub fn mixed_targets(m: &Mixed) -> Table {
    let mut t = Table::new(&["target", "measured", "result"]);
    let py_fail = m.timeouts(true);
    t.row(vec![
        "no python-redis-lock acquire() fails".into(),
        py_fail.to_string(),
        verdict(py_fail == 0, "limit 0".into()),
    ]);
    let (least, avg) = m.least_python_vs_module();
    let share = least as f64 / avg;
    t.row(vec![
        format!("least-served python client ≥ {MIXED_LEAST_PYTHON}× the average module client"),
        format!("{least} / {avg:.1} = {}", ratio(share)),
        verdict(
            share >= MIXED_LEAST_PYTHON,
            format!("limit {MIXED_LEAST_PYTHON:.2}×"),
        ),
    ]);
    let mod_fail = m.timeouts(false);
    t.row(vec![
        "no module BLOCK timeout".into(),
        mod_fail.to_string(),
        verdict(mod_fail == 0, "limit 0".into()),
    ]);
    let over = m.overlaps();
    t.row(vec![
        "no overlap (two holders at once)".into(),
        over.to_string(),
        verdict(over == 0, "limit 0".into()),
    ]);
    t
}

/// The targets table; it needs every workload's results, so only a full run has it.
pub fn report_targets(r: &Results, report: &mut Report) {
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
        // Issue 10's tighter targets, also with a replica attached.
        let with_replica = |p: Proto| {
            r.unc_replica
                .iter()
                .find(|u| u.proto == p && u.pipelined == pipelined)
                .map(|u| u.server_us)
        };
        let mut cases = vec![("", rl, py, fl)];
        if let (Some(rl), Some(py), Some(fl)) = (
            with_replica(Proto::Rlock),
            with_replica(Proto::PyLock),
            with_replica(Proto::Floor),
        ) {
            cases.push((", a replica attached", rl, py, fl));
        }
        for (replica, rl, py, fl) in cases {
            t.row(vec![
                format!("issue 10: uncontended ≤ 0.25× python-redis-lock ({mode}{replica})"),
                format!("{rl:.2} / {py:.2} µs = {}", ratio(rl / py)),
                verdict(rl / py <= 0.25, "limit 0.25×".into()),
            ]);
            t.row(vec![
                format!("issue 10: uncontended ≤ 2.0× floor ({mode}{replica})"),
                format!("{rl:.2} / {fl:.2} µs = {}", ratio(rl / fl)),
                verdict(rl / fl <= 2.0, "limit 2.00×".into()),
            ]);
        }
    }
    let c8 = |who: &str| {
        r.con
            .iter()
            .find(|c| c.clients == 8 && c.hold_ms == 0 && c.who == who)
    };
    let r8 = c8(Proto::Rlock.label()).unwrap();
    let ratios: Vec<f64> = r.repeats.iter().map(|(rl, py)| rl / py).collect();
    let median = median(ratios.clone());
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
    if let Some(p8) = c8(REAL_PYTHON) {
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
    let rex = r.expiry[0].1.q(0.99);
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
    report.section("Targets (issues 3 and 10)", "", &t);
}
