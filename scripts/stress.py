#!/usr/bin/env python3
"""Mutual-exclusion stress check for rlock, with python-redis-lock clients and injected faults.

    python scripts/stress.py --seconds 180 --module target/release/librlock.so

Starts its own redis-server with the module (unix socket in a temp dir), then for --seconds runs
worker PROCESSES on a few locks:

* module workers: ``LOCK.ACQUIRE <lock> <token> <ttl> BLOCK <ms>``, critical section,
  ``LOCK.RELEASE <lock> <token>``;
* python workers: ``redis_lock.Lock(conn, <lock>, expire=<ttl>, id=<token>)`` acquire / release
  (the unmodified python-redis-lock package, sharing the same keys).

Every attempt uses a fresh token. Most attempts wait long (module BLOCK --block-ms; python without
timeout); --short-ratio of them wait only 1..--short-block-ms ms (python: timeout=1), so that
time-outs race with hand-overs. A worker holds a lock 0..--hold-ms ms (far below the TTL), and
appends records to its own file: acquire sent (t0) / reply (start of the critical section), end of
the critical section, release result. Times are CLOCK_MONOTONIC (``time.monotonic_ns``), which is
one clock for all processes.

Faults while running:
* SIGKILL of a worker inside its critical section (its lock must expire after the TTL and pass
  on); the worker slot is respawned;
* ``CLIENT KILL`` and ``CLIENT UNBLOCK`` of blocked waiters (module or python);
* one ``FLUSHALL`` (at 1/3 of the run) and one ``LOCK.RESETALL`` (at 2/3).
A sampler also reads ``LOCK.OWNER`` of every lock every few milliseconds.

Checks (any failure -> exit status 1):
* overlaps: no two critical sections on the same lock overlap in time, counting each critical
  section only while its holder still owned the lock. A holder whose release replied 1 owned it
  throughout (tokens are unique). Otherwise the lease may legitimately have been lost: a section is
  cut at the first FLUSHALL / RESETALL that may have run after its acquire, and a killed holder's
  section ends at its kill (at most acquire-sent + TTL);
* a release that replies 0 must be explained by a FLUSHALL / RESETALL during the hold or by the
  TTL running out; otherwise the lock was taken away without cause;
* no token is ever seen owning a lock after its holder was told no (nil / False), or after its
  release succeeded, and every owner seen belongs to some attempt;
* every LOCK.ACQUIRE gets a reply: a long wait must not time out (lost wake-up), and a worker
  still waiting while the server shows its connection idle and no longer blocked was let go with
  no reply at all;
* starvation: every worker slot, and every worker process that lived >= --starve-seconds of the
  run, acquired at least once before the stop (afterwards the others leave and anyone gets in);
* workers stop within a deadline, the server's ``blocked_clients`` returns to 0 and every
  ``lock:*`` key is gone (released or expired) once they have stopped; the server is alive.

Prints a report (acquisitions per worker type, overlaps, starved workers, waits, faults) and
optionally writes it as JSON (--json).
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
MS = 1_000_000

# Worker states in the shared array (what the fault injector needs to know).
IDLE, WAITING, HOLDING, RELEASING = 0, 1, 2, 3
# Shared array layout, per slot: state, lock index, seq.
FIELDS = 3


def now():
    return time.monotonic_ns()


# --------------------------------------------------------------------------------------------
# Workers (run in child processes)
# --------------------------------------------------------------------------------------------

def _connect(sock, name):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(unix_socket_path=sock, socket_timeout=None, client_name=name,
                       retry=Retry(NoBackoff(), 0))


def worker_main(kind, slot, gen, cfg, shared, stop, outdir):
    """One worker process: loop acquire / hold / release until `stop` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when to stop
    rng = random.Random((os.getpid() << 16) ^ now())
    path = os.path.join(outdir, f"{kind}{slot}.{gen}.log")
    out = open(path, "a", buffering=1)  # line-buffered: a SIGKILL loses at most a partial line
    base = slot * FIELDS

    def rec(*fields):
        out.write(" ".join(str(f) for f in fields) + "\n")

    conn = _connect(cfg["socket"], f"{kind}{slot}.{gen}")
    if kind == "p":
        import redis_lock
    seq = 0
    rec("start", kind, slot, gen, os.getpid(), now())
    try:
        while not stop.is_set():
            seq += 1
            li = rng.randrange(cfg["locks"])
            lock = f"stress:{li}"
            token = f"{kind}{slot}.{gen}.{seq}"
            shared[base + 1] = li
            shared[base + 2] = seq
            shared[base + 0] = WAITING
            # Some attempts wait only briefly, so that time-outs race with hand-overs; the rest
            # (the "long" ones) must never time out.
            short = rng.random() < cfg["short_ratio"]
            limit = rng.randint(1, cfg["short_block_ms"]) if short else 0
            t0 = now()
            try:
                if kind == "m":
                    reply = conn.execute_command("LOCK.ACQUIRE", lock, token, cfg["ttl"],
                                                 "BLOCK", limit or cfg["block_ms"])
                    got = reply is not None
                else:
                    # python-redis-lock's usual blocking acquire: without a timeout it waits
                    # (BLPOP on the signal list, re-polling every `expire` s) until it gets the
                    # lock; a short attempt uses timeout=1 (whole seconds; at most `expire`).
                    plock = redis_lock.Lock(conn, lock, expire=cfg["ttl"], id=token)
                    got = plock.acquire(blocking=True, timeout=1 if short else None)
            except redis.ConnectionError as exc:
                # CLIENT KILL while waiting (or a reply lost with the connection).
                shared[base + 0] = IDLE
                rec("err", seq, li, t0, now(), type(exc).__name__)
                continue
            t1 = now()
            if not got:
                shared[base + 0] = IDLE
                rec("nil", seq, li, t0, t1, int(short))
                continue
            rec("acq", seq, li, t0, t1)  # before HOLDING: a worker killed in HOLDING has its record
            shared[base + 0] = HOLDING
            # The critical section: well below the TTL for a worker that is not killed.
            time.sleep(rng.uniform(0, cfg["hold_ms"]) / 1000.0)
            end = now()
            shared[base + 0] = RELEASING
            try:
                if kind == "m":
                    released = int(conn.execute_command("LOCK.RELEASE", lock, token))
                else:
                    try:
                        plock.release()
                        released = 1
                    except redis_lock.NotAcquired:
                        released = 0
            except redis.ConnectionError:
                released = -1  # unknown: the connection died (CLIENT KILL race)
            rec("rel", seq, li, end, now(), released)
            shared[base + 0] = IDLE
            if cfg["think_ms"]:
                time.sleep(rng.uniform(0, cfg["think_ms"]) / 1000.0)
    except BaseException:  # noqa: BLE001 - any crash is reported by the controller
        rec("crash", now(), json.dumps(traceback.format_exc()))
        raise
    finally:
        shared[base + 0] = IDLE
        rec("exit", now())
        out.close()


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------

class Server:
    def __init__(self, binary, module, workdir):
        self.dir = workdir
        self.socket = os.path.join(workdir, "redis.sock")
        self.logfile = os.path.join(workdir, "redis.log")
        args = [binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", workdir, "--logfile", self.logfile,
                "--maxclients", "1000", "--loadmodule", str(module)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)

    def client(self, timeout=10):
        return redis.Redis(unix_socket_path=self.socket, socket_timeout=timeout,
                           client_name="controller")

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                c = self.client(1)
                c.ping()
                c.execute_command("LOCK.OWNER", "stress-probe")
                c.close()
                return
            except redis.ResponseError as exc:
                raise RuntimeError(f"LOCK.OWNER fails ({exc}): module not loaded?") from exc
            except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready within {timeout} s\n{self.log_tail()}")
            time.sleep(0.01)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(self.logfile, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------------------------
# Controller
# --------------------------------------------------------------------------------------------

class Run:
    def __init__(self, args, server, outdir):
        self.args = args
        self.server = server
        self.outdir = outdir
        self.ctx = mp.get_context("spawn")
        self.stop = self.ctx.Event()
        self.kinds = ["m"] * args.module_workers + ["p"] * args.python_workers
        self.shared = self.ctx.RawArray("q", FIELDS * len(self.kinds))
        self.procs = {}  # slot -> (Process, gen, started_ns)
        self.gens = defaultdict(int)
        self.lifetimes = []  # (kind, slot, gen, started_ns, ended_ns)
        self.kills = {}  # (slot, gen) -> dict(t_kill, state, seq, lock)
        self.events = []  # dict(kind, before, after, result)
        self.waiter_faults = defaultdict(int)
        self.owner_seen = {}  # (lock, token) -> [first_before, last_after] sample windows
        self.cfg = {
            "socket": server.socket, "locks": args.locks, "ttl": args.ttl,
            "block_ms": args.block_ms, "short_ratio": args.short_ratio,
            "short_block_ms": args.short_block_ms,
            "hold_ms": args.hold_ms, "think_ms": args.think_ms,
        }
        self.admin = server.client()
        self.sampler = server.client()
        self.notes = []
        self.lost_replies = set()  # (slot, gen, seq) of LOCK.ACQUIREs left without a reply

    # -- processes --
    def spawn(self, slot):
        gen = self.gens[slot] = self.gens[slot] + 1
        kind = self.kinds[slot]
        p = self.ctx.Process(target=worker_main, name=f"{kind}{slot}.{gen}",
                             args=(kind, slot, gen, self.cfg, self.shared, self.stop, self.outdir))
        p.start()
        self.procs[slot] = (p, gen, now())

    def reap(self, respawn):
        for slot, (p, gen, started) in list(self.procs.items()):
            if p.exitcode is not None:
                p.join()
                self.lifetimes.append((self.kinds[slot], slot, gen, started, now()))
                del self.procs[slot]
                if respawn:
                    self.spawn(slot)

    # -- faults --
    def kill_holder(self, rng):
        holding = [s for s in self.procs if self.shared[s * FIELDS] == HOLDING]
        if not holding:
            return False
        slot = rng.choice(holding)
        p, gen, _ = self.procs[slot]
        seq = self.shared[slot * FIELDS + 2]
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        t_kill = now()
        state_after = self.shared[slot * FIELDS]
        self.kills[(slot, gen)] = {"t_kill": t_kill, "seq": seq, "state": state_after,
                                   "seq_after": self.shared[slot * FIELDS + 2]}
        self.reap(respawn=True)
        return {"m": "module", "p": "python"}[self.kinds[slot]]

    def audit_waiters(self):
        """A module worker still waiting for its LOCK.ACQUIRE reply while the server shows its
        connection idle and no longer blocked (for >= 2 s; a reply resets idle) was let go without any
        reply."""
        before = {slot: self.shared[slot * FIELDS + 2] for slot in self.procs
                  if self.kinds[slot] == "m" and self.shared[slot * FIELDS] == WAITING}
        clients = {c.get("name"): c for c in self.admin.client_list()}
        for slot, (p, gen, _) in list(self.procs.items()):
            seq = before.get(slot)
            if seq is None:
                continue
            c = clients.get(f"m{slot}.{gen}")
            if (c and "b" not in c.get("flags", "") and c.get("cmd", "").lower() == "lock.acquire"
                    and int(c.get("idle", 0)) >= 2 and self.shared[slot * FIELDS + 2] == seq
                    and self.shared[slot * FIELDS] == WAITING):
                # It would wait forever: record it, and replace the worker to keep the load up.
                self.lost_replies.add((slot, gen, seq))
                os.kill(p.pid, signal.SIGKILL)
                p.join()
        self.reap(respawn=not self.stop.is_set())

    def worker_state(self, name):
        """What a worker (by process name) last published: state, lock, attempt number."""
        slot = int(name[1:].split(".")[0])
        state, li, seq = self.shared[slot * FIELDS: slot * FIELDS + FIELDS]
        label = {IDLE: "idle", WAITING: "waiting", HOLDING: "holding", RELEASING: "releasing"}[state]
        return f"{label} stress:{li} attempt {seq}"

    def blocked_waiters(self):
        return [c for c in self.admin.client_list()
                if "b" in c.get("flags", "") and c.get("name", "") != "controller"]

    def waiter_fault(self, rng, how):
        waiters = self.blocked_waiters()
        if not waiters:
            return False
        c = rng.choice(waiters)
        cmd = c.get("cmd", "?")
        if how == "kill":
            done = self.admin.client_kill_filter(_id=c["id"])
        else:
            done = self.admin.client_unblock(c["id"])
        if done:
            self.waiter_faults[f"client {how} ({cmd})"] += 1
        return bool(done)

    def global_event(self, kind):
        before = now()
        if kind == "FLUSHALL":
            result = self.admin.flushall()
        else:
            result = self.admin.execute_command("LOCK.RESETALL")
        after = now()
        self.events.append({"kind": kind, "before": before, "after": after, "result": str(result)})

    def sample_owners(self):
        pipe = self.sampler.pipeline(transaction=False)
        for i in range(self.args.locks):
            pipe.execute_command("LOCK.OWNER", f"stress:{i}")
        before = now()
        owners = pipe.execute()
        after = now()
        for i, token in enumerate(owners):
            if token is None:
                continue
            key = (i, token.decode())
            seen = self.owner_seen.get(key)
            if seen is None:
                self.owner_seen[key] = [before, after]
            else:
                seen[1] = after

    def blocked_clients(self):
        return self.admin.info("clients")["blocked_clients"]

    # -- the run --
    def run(self):
        args = self.args
        rng = random.Random(args.seed)
        for slot in range(len(self.kinds)):
            self.spawn(slot)
        # Wait until every worker has connected (CLIENT LIST shows its name).
        deadline = time.monotonic() + 60
        want = {f"{k}{s}.1" for s, k in enumerate(self.kinds)}
        while want - {c.get("name") for c in self.admin.client_list()}:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not connect within 60 s")
            self.reap(respawn=True)
            time.sleep(0.02)
        t_start = now()
        t_end = t_start + int(args.seconds * NS)
        specials = [(t_start + (t_end - t_start) // 3, "FLUSHALL"),
                    (t_start + 2 * (t_end - t_start) // 3, "LOCK.RESETALL")]
        next_fault = t_start + int(rng.uniform(0.2, 0.6) * NS)
        faults = defaultdict(int)
        next_audit = t_start
        while now() < t_end:
            if not self.server.alive():
                self.notes.append("redis-server died during the run")
                break
            self.sample_owners()
            self.reap(respawn=True)
            t = now()
            if t >= next_audit:
                self.audit_waiters()
                next_audit = t + NS // 2
            if specials and t >= specials[0][0]:
                # Fire when live workers hold locks (up to 2 s late), so that the event really
                # takes locks away from holders that are still inside their critical sections.
                holders = sum(1 for s in self.procs if self.shared[s * FIELDS] == HOLDING)
                if holders >= min(2, self.args.locks) or t >= specials[0][0] + 2 * NS:
                    self.global_event(specials.pop(0)[1])
            if t >= next_fault:
                pick = rng.random()
                if pick < 0.3:
                    kind = self.kill_holder(rng)
                    if kind:
                        faults[f"sigkill in critical section ({kind})"] += 1
                elif pick < 0.65:
                    self.waiter_fault(rng, "kill")
                else:
                    self.waiter_fault(rng, "unblock")
                next_fault = now() + int(rng.uniform(args.fault_interval * 0.5,
                                                     args.fault_interval * 1.5) * NS)
            time.sleep(0.002)
        faults.update(self.waiter_faults)
        self.faults = dict(faults)
        t_stop = now()
        self.stop.set()
        # Workers finish their current attempt (at most BLOCK ms + hold) and exit.
        stop_deadline = time.monotonic() + args.block_ms / 1000 + args.ttl + 10
        stuck = []
        next_audit = 0
        while self.procs and self.server.alive():
            self.sample_owners()
            self.reap(respawn=False)
            if time.monotonic() > next_audit:
                self.audit_waiters()
                next_audit = time.monotonic() + 0.5
            if time.monotonic() > stop_deadline:
                stuck = sorted(p.name for p, _, _ in self.procs.values())
                names = set(stuck)
                for c in self.admin.client_list():
                    if c.get("name") in names:
                        self.notes.append(
                            f"stuck worker {c['name']}: state {self.worker_state(c['name'])}, server says "
                            f"cmd={c.get('cmd')} flags={c.get('flags')} age={c.get('age')} idle={c.get('idle')}")
                for p, _, _ in self.procs.values():
                    p.kill()
                    p.join()
                self.reap(respawn=False)
                break
            time.sleep(0.01)
        self.stuck = stuck
        self.t_start, self.t_stop, self.t_workers_done = t_start, t_stop, now()
        self.final = self.final_checks()

    def final_checks(self):
        """blocked_clients back to 0, all lock:* keys gone, server alive."""
        out = {"server_alive": self.server.alive()}
        if not out["server_alive"]:
            return out
        deadline = time.monotonic() + 5
        while (b := self.blocked_clients()) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        out["blocked_clients"] = b
        out["blocked_after_s"] = round((now() - self.t_workers_done) / NS, 3)
        deadline = time.monotonic() + self.args.ttl + 2
        while (keys := sorted(k.decode() for k in self.admin.scan_iter("lock:*"))) and time.monotonic() < deadline:
            time.sleep(0.01)
        out["lock_keys_left"] = keys
        out["server_alive"] = self.server.alive()
        return out


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------

def load_records(outdir):
    """Per worker process (kind, slot, gen): its records, parsed."""
    recs = {}
    for name in sorted(os.listdir(outdir)):
        if not name.endswith(".log") or name == "redis.log":
            continue
        kind, rest = name[0], name[1:-4]
        slot, gen = (int(x) for x in rest.split("."))
        rows = []
        with open(os.path.join(outdir, name)) as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # partial line from a SIGKILL
                rows.append(line.split(" ", 5) if line.startswith("crash") else line.split())
        recs[(kind, slot, gen)] = rows
    return recs


def analyse(run, recs):
    a = run.args
    ttl_ns = a.ttl * NS
    events = run.events
    violations = []
    intervals = defaultdict(list)  # lock -> [(start, end, who)]
    acq_count = defaultdict(int)  # (kind, slot, gen) -> acquisitions
    per_kind = defaultdict(lambda: defaultdict(int))
    waits = defaultdict(list)
    token_outcome = {}  # (lock, token) -> outcome
    token_release = {}  # (lock, token) -> time the successful release reply was received
    lost = defaultdict(int)
    straddling = defaultdict(list)  # event kind -> [(token, lock, release result)]

    def first_event_after(t0, t_last):
        """The first global event that may have run in [t0, t_last]."""
        for ev in events:
            if ev["after"] >= t0 and ev["before"] <= t_last:
                return ev
        return None

    for (kind, slot, gen), rows in recs.items():
        who = f"{kind}{slot}.{gen}"
        open_acq = {}
        for row in rows:
            tag = row[0]
            if tag == "crash":
                violations.append(f"worker {who} crashed: {json.loads(row[2])}")
            elif tag == "nil":
                seq, li, t0, t1 = int(row[1]), int(row[2]), int(row[3]), int(row[4])
                token_outcome[(li, f"{who}.{seq}")] = ("nil", t1)
                if int(row[5]):
                    per_kind[kind]["nil (short wait timed out)"] += 1
                elif kind == "m" and t1 - t0 >= a.block_ms * MS:
                    per_kind[kind]["BLOCK timed out"] += 1
                    violations.append(
                        f"{who}.{seq} waited the whole BLOCK {a.block_ms} ms for stress:{li} and got nil, "
                        f"with holds <= {a.hold_ms} ms and TTL {a.ttl} s (a lost wake-up?)")
                else:
                    per_kind[kind]["nil (CLIENT UNBLOCK)"] += 1
                    if kind == "p":
                        violations.append(f"{who}.{seq}: python-redis-lock acquire without timeout returned False")
            elif tag == "err":
                seq, li = int(row[1]), int(row[2])
                token_outcome[(li, f"{who}.{seq}")] = ("err", int(row[4]))
                per_kind[kind]["connection killed while waiting"] += 1
            elif tag == "acq":
                seq, li, t0, t1 = int(row[1]), int(row[2]), int(row[3]), int(row[4])
                open_acq[seq] = (li, t0, t1)
                token_outcome[(li, f"{who}.{seq}")] = ("acq", t1)
                if t1 <= run.t_stop:  # after the stop the other workers leave: too easy
                    acq_count[(kind, slot, gen)] += 1
                per_kind[kind]["acquisitions"] += 1
                waits[kind].append(t1 - t0)
            elif tag == "rel":
                seq, li, end, t_rel, released = int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5])
                li0, t0, start = open_acq.pop(seq)
                assert li0 == li
                token = f"{who}.{seq}"
                for ev in events:
                    # Held for sure while the event ran: acquired before it was sent, release sent
                    # after its reply. FLUSHALL / RESETALL remove every lock, so the release must
                    # find the lock gone.
                    if start < ev["before"] and end > ev["after"]:
                        straddling[ev["kind"]].append((token, li, released))
                        if released == 1:
                            violations.append(
                                f"{token} held stress:{li} across {ev['kind']} and its release still "
                                "replied 1: the lock survived")
                if released == 1:
                    intervals[li].append((start, end, token))
                    token_release[(li, token)] = t_rel
                    continue
                ev = first_event_after(t0, t_rel)
                if ev is not None:
                    lost[f"lost to {ev['kind']}"] += 1
                    cut = min(end, ev["before"])
                    if cut > start:
                        intervals[li].append((start, cut, token))
                elif end - t0 >= ttl_ns:
                    lost["lost to TTL expiry (slow holder)"] += 1
                    cut = min(end, t0 + ttl_ns)
                    if cut > start:
                        intervals[li].append((start, cut, token))
                elif released == -1:
                    lost["release reply lost (connection killed)"] += 1
                    intervals[li].append((start, end, token))
                else:
                    # Nothing may take this lock away: the holder rightly believed it held it
                    # throughout, so the section counts for overlaps too.
                    intervals[li].append((start, end, token))
                    violations.append(
                        f"{token} on stress:{li}: release replied 0 after holding "
                        f"{(end - start) / MS:.1f} ms (TTL {a.ttl} s) with no FLUSHALL/RESETALL: "
                        "the lock was taken away without cause")
        # Acquisitions never released: the process was SIGKILLed in its critical section.
        kill = run.kills.get((slot, gen))
        for seq, (li, t0, start) in open_acq.items():
            token = f"{who}.{seq}"
            if kill is None:
                violations.append(f"{token} acquired stress:{li} but never released, and was not killed")
                continue
            if not (kill["state"] == HOLDING and kill["seq_after"] == seq):
                # The kill raced with the end of the critical section: the release may have been
                # sent, so the end of the section is unknown. Not counted.
                lost["holder SIGKILLed while releasing (section not counted)"] += 1
                continue
            lost["holder SIGKILLed (lock expires)"] += 1
            cut = min(kill["t_kill"], t0 + ttl_ns)
            ev = first_event_after(t0, cut)
            if ev is not None:
                cut = min(cut, ev["before"])
            if cut > start:
                intervals[li].append((start, cut, token))

    # Overlaps between critical sections on the same lock.
    overlaps = []
    for li, ivs in intervals.items():
        ivs.sort()
        max_end, max_tok = -1, None
        for start, end, token in ivs:
            if start < max_end:
                overlaps.append(f"stress:{li}: {max_tok} until +{(max_end - start) / MS:.3f} ms "
                                f"after {token} entered")
            if end > max_end:
                max_end, max_tok = end, token
    for o in overlaps[:20]:
        violations.append(f"overlap: {o}")

    # What the owner sampler saw.
    owner_issues = []
    granted_after_kill = 0
    handed_no_reply = 0  # lost replies whose token was seen owning the lock
    for (li, token), (first, last) in run.owner_seen.items():
        outcome = token_outcome.get((li, token))
        if outcome is None:
            # A SIGKILL can hit a worker between its acquire's reply and its "acq" record only if
            # the kill raced with the state change; such a token is recorded in kills.
            who, seq = token.rsplit(".", 1)
            kind, slot, gen = who[0], int(who[1:].split(".")[0]), int(who.split(".")[1])
            kill = run.kills.get((slot, gen))
            if kill is not None and int(seq) in (kill["seq"], kill["seq_after"]):
                continue
            if (slot, gen, int(seq)) in run.lost_replies:
                handed_no_reply += 1
                continue
            owner_issues.append(f"{token} seen owning stress:{li} but no attempt with that token was recorded")
        elif outcome[0] == "nil":
            owner_issues.append(f"{token} seen owning stress:{li} though its acquire returned nil/False "
                                f"(seen {(first - outcome[1]) / MS:+.1f} ms after that reply)")
        elif outcome[0] == "err":
            granted_after_kill += 1  # granted just before its connection was killed: legal
        rel = token_release.get((li, token))
        if rel is not None and first > rel:
            owner_issues.append(f"{token} seen owning stress:{li} after its release replied 1")
    violations += owner_issues[:20]

    # Starvation.
    slots_acq = defaultdict(int)
    for (kind, slot, gen), n in acq_count.items():
        slots_acq[(kind, slot)] += n
    starved = []
    for slot, kind in enumerate(run.kinds):
        if slots_acq[(kind, slot)] == 0:
            starved.append(f"{kind}{slot} (all generations)")
    for kind, slot, gen, started, ended in run.lifetimes:
        life = (min(ended, run.t_stop) - max(started, run.t_start)) / NS
        hung = any((slot, gen) == (s, g) for s, g, _ in run.lost_replies)  # reported as such
        if life >= a.starve_seconds and acq_count[(kind, slot, gen)] == 0 and (slot, gen) not in run.kills and not hung:
            starved.append(f"{kind}{slot}.{gen} (lived {life:.1f} s)")
    for s in starved:
        violations.append(f"starved: {s}")

    for slot, gen, seq in sorted(run.lost_replies):
        violations.append(
            f"m{slot}.{gen}.{seq}: LOCK.ACQUIRE never got a reply; the server shows the client idle and "
            "no longer blocked (a waiter released from its wait without OK or nil)")
    if handed_no_reply:
        violations.append(f"{handed_no_reply} of those waiter(s) seen owning the lock (LOCK.OWNER) "
                          "although they never heard so")
    if run.stuck:
        violations.append(f"workers did not stop in time: {run.stuck}")
    fin = run.final
    if not fin.get("server_alive"):
        violations.append("redis-server is not alive at the end")
    else:
        if fin["blocked_clients"] != 0:
            violations.append(f"blocked_clients is {fin['blocked_clients']} after all workers stopped")
        if fin["lock_keys_left"]:
            violations.append(f"lock keys left after the TTL: {fin['lock_keys_left']}")
    violations += run.notes

    def wait_stats(ns):
        if not ns:
            return {}
        s = sorted(ns)
        pct = lambda q: round(s[min(len(s) - 1, int(q * len(s)))] / MS, 2)  # noqa: E731
        return {"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(s[-1] / MS, 2)}

    per_worker = defaultdict(list)
    for (kind, slot), n in sorted(slots_acq.items(), key=lambda kv: kv[0][1]):
        per_worker[kind].append(n)
    for slot, kind in enumerate(run.kinds):
        if (kind, slot) not in slots_acq:
            per_worker[kind].append(0)
    report = {
        "config": {"seconds": a.seconds, "module_workers": a.module_workers,
                   "python_workers": a.python_workers, "locks": a.locks, "ttl_s": a.ttl,
                   "hold_ms": a.hold_ms, "think_ms": a.think_ms, "block_ms": a.block_ms,
                   "short_ratio": a.short_ratio, "short_block_ms": a.short_block_ms,
                   "fault_interval_s": a.fault_interval, "seed": a.seed},
        "run_seconds": round((run.t_stop - run.t_start) / NS, 2),
        "acquisitions": {"module": per_kind["m"]["acquisitions"], "python": per_kind["p"]["acquisitions"]},
        "per_worker_slot": {"module": per_worker["m"], "python": per_worker["p"]},
        "attempts_without_lock": {
            "module": {k: v for k, v in per_kind["m"].items() if k != "acquisitions"},
            "python": {k: v for k, v in per_kind["p"].items() if k != "acquisitions"},
        },
        "wait": {"module": wait_stats(waits["m"]), "python": wait_stats(waits["p"])},
        "critical_sections_checked": sum(len(v) for v in intervals.values()),
        "overlaps": len(overlaps),
        "starved": starved,
        "lost_replies": len(run.lost_replies),
        "faults": run.faults,
        "global_events": [{"kind": e["kind"], "at_s": round((e["before"] - run.t_start) / NS, 2),
                           "reply": e["result"],
                           "held_across": [f"{t}@stress:{li}->release {r}" for t, li, r in straddling[e["kind"]]]}
                          for e in events],
        "lease_lost": dict(lost),
        "owners_sampled": len(run.owner_seen),
        "granted_just_before_client_kill": granted_after_kill,
        "processes": len(run.lifetimes),
        "stop": {"workers_stopped_s": round((run.t_workers_done - run.t_stop) / NS, 2), **run.final},
        "violations": violations,
    }
    return report


def print_report(rep, out=sys.stdout):
    c = rep["config"]
    p = lambda *x: print(*x, file=out)  # noqa: E731
    p(f"rlock stress: {rep['run_seconds']} s, {c['module_workers']} module + {c['python_workers']} "
      f"python-redis-lock worker processes on {c['locks']} locks (TTL {c['ttl_s']} s, hold 0-{c['hold_ms']} ms, "
      f"think 0-{c['think_ms']} ms, BLOCK {c['block_ms']} ms / {c['short_ratio']:.0%} short 1-{c['short_block_ms']} ms, "
      f"seed {c['seed']})")
    acq = rep["acquisitions"]
    p(f"acquisitions:      module {acq['module']}, python {acq['python']}, total {acq['module'] + acq['python']}")
    for kind in ("module", "python"):
        n = rep["per_worker_slot"][kind]
        if n:
            p(f"  per {kind} worker: min {min(n)}, max {max(n)}  {n}")
    for kind in ("module", "python"):
        w = rep["wait"][kind]
        if w:
            p(f"wait ({kind}):     p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, max {w['max_ms']} ms")
    for kind in ("module", "python"):
        x = rep["attempts_without_lock"][kind]
        if x:
            p(f"no lock ({kind}):  {x}")
    p(f"faults:            {rep['faults']}")
    p(f"global events:     {rep['global_events']}")
    p(f"leases lost:       {rep['lease_lost']}")
    p(f"sections checked:  {rep['critical_sections_checked']}; owners sampled: {rep['owners_sampled']}; "
      f"worker processes: {rep['processes']}")
    p(f"overlaps:          {rep['overlaps']}")
    p(f"starved workers:   {len(rep['starved'])} {rep['starved'] or ''}")
    p(f"lost replies:      {rep['lost_replies']}")
    s = rep["stop"]
    p(f"after stop:        workers stopped in {s['workers_stopped_s']} s; blocked_clients "
      f"{s.get('blocked_clients')} (after {s.get('blocked_after_s')} s); lock keys left "
      f"{s.get('lock_keys_left')}; server alive {s['server_alive']}")
    if rep["violations"]:
        p(f"VIOLATIONS ({len(rep['violations'])}):")
        for v in rep["violations"]:
            p(f"  - {v}")
        p("RESULT: FAIL")
    else:
        p("RESULT: PASS")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--module", default=os.environ.get("RLOCK_MODULE", str(REPO / "target/release/librlock.so")))
    ap.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER") or shutil.which("redis-server"))
    ap.add_argument("--module-workers", type=int, default=16)
    ap.add_argument("--python-workers", type=int, default=8)
    ap.add_argument("--locks", type=int, default=3)
    ap.add_argument("--ttl", type=int, default=2, help="lease in seconds")
    ap.add_argument("--hold-ms", type=float, default=20, help="critical section lasts 0..this")
    ap.add_argument("--think-ms", type=float, default=0, help="pause between attempts 0..this")
    ap.add_argument("--block-ms", type=int, default=10000,
                    help="LOCK.ACQUIRE ... BLOCK ms; a module waiter that waits this long is a violation")
    ap.add_argument("--short-ratio", type=float, default=0.25,
                    help="share of attempts that wait briefly (module BLOCK 1..--short-block-ms, python timeout=1)")
    ap.add_argument("--short-block-ms", type=int, default=200)
    ap.add_argument("--fault-interval", type=float, default=0.5, help="mean seconds between faults")
    ap.add_argument("--starve-seconds", type=float, default=10.0,
                    help="a worker process alive this long with no acquisition is starved")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (records, server log)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if args.module_workers < 0 or args.python_workers < 0 or args.module_workers + args.python_workers == 0:
        ap.error("need workers")
    module = Path(args.module).resolve()
    if not module.is_file():
        print(f"stress: module not found: {module}", file=sys.stderr)
        return 2
    if not args.redis_server:
        print("stress: redis-server not found", file=sys.stderr)
        return 2

    workdir = tempfile.mkdtemp(prefix="rlock-stress-")
    server = Server(args.redis_server, module, workdir)
    run = None
    try:
        server.wait_ready()
        outdir = os.path.join(workdir, "records")
        os.makedirs(outdir)
        run = Run(args, server, outdir)
        run.run()
        report = analyse(run, load_records(outdir))
        if not report["stop"].get("server_alive"):
            report["server_log_tail"] = server.log_tail()
            print(report["server_log_tail"], file=sys.stderr)
        print_report(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 1 if report["violations"] else 0
    except Exception:
        traceback.print_exc()
        print(f"server log:\n{server.log_tail()}", file=sys.stderr)
        return 2
    finally:
        if run is not None:
            run.stop.set()
            for p, _, _ in list(run.procs.values()):
                if p.is_alive():
                    p.kill()
                p.join()
        server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
