//! The machine the numbers come from (date, CPU, kernel, server, module revision) for the
//! report's header, and the open-file limit that 10,000 connections need.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;

use redis::Connection;

use crate::server::info;

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

/// The report's "Machine" lines, a Markdown list.
pub fn machine(admin: &mut Connection, root: &Path) -> String {
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
pub fn raise_nofile(want: u64) -> u64 {
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
