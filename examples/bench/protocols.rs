//! The four lock protocols, all spoken by this one Rust client so that client speed does not
//! decide the result: rlock, python-redis-lock's protocol (with its unlock script), redis-py
//! Lock's protocol (with its release script), and the bare-command floor.

use std::thread;
use std::time::Duration;

use redis::{Connection, Value};

use crate::common::Server;

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
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

/// The protocols of every table (`FloorOnLockKeys` is in the uncontended one only).
pub const PROTOS: [Proto; 4] = [Proto::Rlock, Proto::PyLock, Proto::RedisPy, Proto::Floor];

impl Proto {
    pub fn label(self) -> &'static str {
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
    pub fn top_level(self) -> [&'static str; 2] {
        match self {
            Proto::Rlock => ["lock.acquire", "lock.release"],
            Proto::PyLock | Proto::RedisPy => ["set", "evalsha"],
            Proto::Floor | Proto::FloorOnLockKeys => ["set", "del"],
        }
    }

    /// Server µs spent in the cycle's two top-level commands, from `INFO commandstats` (`stats`),
    /// checking that each ran exactly `cycles` times.
    pub fn cycle_usec(
        self,
        stats: &std::collections::HashMap<String, (u64, u64)>,
        cycles: usize,
    ) -> u64 {
        self.top_level()
            .iter()
            .map(|cmd| {
                let (calls, usec) = stats[*cmd];
                assert_eq!(calls as usize, cycles, "{cmd} calls");
                usec
            })
            .sum()
    }

    /// The key holding lock `name`.
    pub fn key(self, name: &str) -> String {
        match self {
            Proto::Floor => format!("floor:{name}"),
            _ => format!("lock:{name}"),
        }
    }
}

#[derive(Clone)]
pub struct Shas {
    py_unlock: String,
    redis_py_release: String,
}

pub fn load_scripts(con: &mut Connection) -> Shas {
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
pub struct Client {
    pub con: Connection,
    proto: Proto,
    shas: Shas,
    token: String,
    ttl_secs: u64,
}

impl Client {
    pub fn new(server: &Server, proto: Proto, shas: &Shas, id: usize, ttl_secs: u64) -> Client {
        Client {
            con: server.conn(),
            proto,
            shas: shas.clone(),
            token: format!("bench-token-{id:012}"),
            ttl_secs,
        }
    }

    /// One attempt to take `name` (rlock: with `BLOCK 0`, as a waiting client calls it).
    pub fn try_cmd(&self, name: &str) -> redis::Cmd {
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

    pub fn release_cmd(&self, name: &str) -> redis::Cmd {
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
    pub fn released(&self) -> Value {
        match self.proto {
            Proto::PyLock => Value::Int(0),
            _ => Value::Int(1),
        }
    }

    /// `PIPELINE_CYCLES` acquire + release cycles in one pipeline, on the names
    /// `<prefix><next>`, `<prefix><next + 1>`, ... (`next` moves on); every reply checked.
    pub fn pipelined_cycles(&mut self, prefix: &str, next: &mut usize) -> usize {
        let mut pipe = redis::pipe();
        for _ in 0..crate::PIPELINE_CYCLES {
            let name = format!("{prefix}{next}");
            *next += 1;
            pipe.add_command(self.try_cmd(&name));
            pipe.add_command(self.release_cmd(&name));
        }
        let replies: Vec<Value> = pipe.query(&mut self.con).unwrap();
        for pair in replies.chunks(2) {
            assert_eq!(pair[0], Value::Okay);
            assert_eq!(pair[1], self.released());
        }
        crate::PIPELINE_CYCLES
    }

    /// Take `name`, waiting the way the protocol waits.
    pub fn acquire(&mut self, name: &str) {
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

    pub fn release(&mut self, name: &str) {
        let reply: Value = self.release_cmd(name).query(&mut self.con).unwrap();
        assert_eq!(reply, self.released(), "{}: release", self.proto.label());
    }
}
