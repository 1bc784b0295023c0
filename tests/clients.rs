//! LOCK.* called from the Rust `redis` crate the way an application would: `redis::cmd(..)`
//! with typed replies (`Option<String>`, `i64`, `(String, i64)`, a `HashMap` for `LOCK.INFO`),
//! over RESP2 and RESP3 (`?protocol=resp3` in the URL), on a real module-loaded server. Blocked
//! acquires run on their own connection in a thread; waiting is for `blocked_clients` or
//! `LOCK.INFO`'s `waiters`, with a deadline. The async API (tokio, `MultiplexedConnection`) is
//! in the `tokio_api` module below.

mod common;

use common::{Server, DEADLINE};
use redis::{Commands, Connection, Value};
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A client as an application makes one, for RESP2 or RESP3.
fn client(server: &Server, resp3: bool) -> redis::Client {
    let url = if resp3 {
        format!("{}?protocol=resp3", server.url)
    } else {
        server.url.clone()
    };
    redis::Client::open(url).unwrap()
}

fn connect(server: &Server, resp3: bool) -> Connection {
    client(server, resp3).get_connection().unwrap()
}

/// `LOCK.INFO`: a map in RESP3, a flat array in RESP2; `HashMap` reads both.
fn lock_info(c: &mut Connection, name: &str) -> HashMap<String, Value> {
    redis::cmd("LOCK.INFO").arg(name).query(c).unwrap()
}

fn field<T: redis::FromRedisValue>(info: &HashMap<String, Value>, name: &str) -> T {
    redis::from_redis_value_ref(&info[name]).unwrap()
}

fn owner(c: &mut Connection, name: &str) -> Option<String> {
    redis::cmd("LOCK.OWNER").arg(name).query(c).unwrap()
}

fn release(c: &mut Connection, name: &str, token: &str) -> bool {
    redis::cmd("LOCK.RELEASE")
        .arg(name)
        .arg(token)
        .query(c)
        .unwrap()
}

/// Wait (with the deadline) until `probe` returns `want`.
fn wait_for<T: PartialEq + std::fmt::Debug>(what: &str, want: T, mut probe: impl FnMut() -> T) {
    let start = Instant::now();
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what} stayed {got:?}, wanted {want:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// A command on its own connection in a thread; `wait` takes its reply with the deadline.
struct Blocked<T> {
    rx: mpsc::Receiver<(redis::RedisResult<T>, Connection)>,
}

impl<T: std::fmt::Debug> Blocked<T> {
    /// The reply; the connection is then dropped (closed).
    fn wait(&self) -> T {
        self.wait_keep().0
    }

    /// The reply, and the connection it came on (still open).
    fn wait_keep(&self) -> (T, Connection) {
        let (reply, conn) = self
            .rx
            .recv_timeout(DEADLINE)
            .expect("no reply before the deadline");
        (reply.unwrap(), conn)
    }

    fn pending(&self) -> bool {
        matches!(self.rx.try_recv(), Err(mpsc::TryRecvError::Empty))
    }
}

/// Send `cmd` on `conn` from a thread and return once the server counts `blocked` blocked
/// clients.
fn block_on<T: redis::FromRedisValue + Send + 'static>(
    server: &Server,
    mut conn: Connection,
    cmd: redis::Cmd,
    blocked: i64,
) -> Blocked<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let reply = cmd.query::<T>(&mut conn);
        let _ = tx.send((reply, conn));
    });
    server.wait_blocked(blocked);
    Blocked { rx }
}

#[test]
fn commands_and_typed_replies() {
    let server = Server::start();
    for resp3 in [false, true] {
        let mut c = connect(&server, resp3);
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();

        // OK is `()` (or a String "OK"); nil is `None`
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-1")
            .arg(30)
            .query(&mut c)
            .unwrap();
        let again: Option<String> = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-1")
            .arg(30)
            .query(&mut c)
            .unwrap();
        assert_eq!(again.as_deref(), Some("OK"), "the same token refreshes");
        let other: Option<String> = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-2")
            .arg(30)
            .query(&mut c)
            .unwrap();
        assert_eq!(other, None, "held, no BLOCK: nil at once");
        assert_eq!(owner(&mut c, "orders").as_deref(), Some("tok-1"));

        let renewed: bool = redis::cmd("LOCK.RENEW")
            .arg("orders")
            .arg("tok-1")
            .arg(60)
            .query(&mut c)
            .unwrap();
        assert!(renewed);
        let renewed: i64 = redis::cmd("LOCK.RENEW")
            .arg("orders")
            .arg("tok-2")
            .arg(60)
            .query(&mut c)
            .unwrap();
        assert_eq!(renewed, 0);

        let info = lock_info(&mut c, "orders");
        let mut keys: Vec<&str> = info.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["bound_to", "fence", "owner", "python", "ttl", "waiters"]
        );
        assert_eq!(
            field::<Option<String>>(&info, "owner").as_deref(),
            Some("tok-1")
        );
        let ttl: i64 = field(&info, "ttl");
        assert!(55_000 < ttl && ttl <= 60_000, "ttl {ttl}");
        assert_eq!(field::<i64>(&info, "waiters"), 0);
        assert_eq!(field::<Option<i64>>(&info, "bound_to"), None);
        assert_eq!(field::<Option<i64>>(&info, "fence"), None);

        assert!(!release(&mut c, "orders", "tok-2"));
        assert!(release(&mut c, "orders", "tok-1"));
        assert_eq!(owner(&mut c, "orders"), None);
        assert_eq!(field::<i64>(&lock_info(&mut c, "orders"), "ttl"), -2);

        // BLOCK with a limit: nil when the time is up
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-1")
            .arg(30)
            .query(&mut c)
            .unwrap();
        let late: Option<String> = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-2")
            .arg(30)
            .arg("BLOCK")
            .arg(50)
            .query(&mut c)
            .unwrap();
        assert_eq!(late, None);

        // token *: the server makes one and replies it
        let made: Option<String> = redis::cmd("LOCK.ACQUIRE")
            .arg("invoices")
            .arg("*")
            .arg(30)
            .query(&mut c)
            .unwrap();
        let made = made.expect("free lock: a token");
        assert_eq!(made.len(), 24);
        assert_eq!(owner(&mut c, "invoices").as_deref(), Some(made.as_str()));

        let err = redis::cmd("LOCK.ACQUIRE")
            .arg("orders")
            .arg("tok-1")
            .arg(0)
            .query::<Option<String>>(&mut c)
            .unwrap_err();
        assert!(
            err.to_string().contains("ttl must be a positive integer"),
            "{err}"
        );

        let removed: i64 = redis::cmd("LOCK.RESETALL").query(&mut c).unwrap();
        assert_eq!(removed, 2);
        // the lock keys are plain keys
        let exists: bool = c.exists("lock:orders").unwrap();
        assert!(!exists);
    }
}

#[test]
fn blocked_acquire_woken_by_release() {
    let server = Server::start();
    for resp3 in [false, true] {
        let mut c = connect(&server, resp3);
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("jobs")
            .arg("holder")
            .arg(30)
            .query(&mut c)
            .unwrap();
        let waiters: Vec<Blocked<Option<String>>> = (0..3)
            .map(|i| {
                let mut cmd = redis::cmd("LOCK.ACQUIRE");
                cmd.arg("jobs")
                    .arg(format!("w{i}"))
                    .arg(30)
                    .arg("BLOCK")
                    .arg(0);
                block_on(&server, connect(&server, resp3), cmd, i + 1)
            })
            .collect();
        assert_eq!(field::<i64>(&lock_info(&mut c, "jobs"), "waiters"), 3);

        // each release hands the lock to the first waiter, at once
        let mut holder = "holder".to_string();
        for (i, w) in waiters.iter().enumerate() {
            assert!(release(&mut c, "jobs", &holder));
            assert_eq!(w.wait().as_deref(), Some("OK"));
            holder = format!("w{i}");
            assert_eq!(owner(&mut c, "jobs").as_deref(), Some(holder.as_str()));
            assert!(waiters[i + 1..].iter().all(Blocked::pending));
        }

        // token * when blocking: the reply is the server-made token
        let mut cmd = redis::cmd("LOCK.ACQUIRE");
        cmd.arg("jobs").arg("*").arg(30).arg("BLOCK").arg(0);
        let star: Blocked<Option<String>> = block_on(&server, connect(&server, resp3), cmd, 1);
        assert!(release(&mut c, "jobs", &holder));
        let token = star.wait().expect("handed the lock");
        assert_eq!(token.len(), 24);
        assert_eq!(owner(&mut c, "jobs"), Some(token.clone()));
        assert!(release(&mut c, "jobs", &token));
        server.wait_blocked(0);
    }
}

#[test]
fn fence_typed_replies() {
    let server = Server::start();
    for resp3 in [false, true] {
        let mut c = connect(&server, resp3);
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        let f1: i64 = redis::cmd("LOCK.ACQUIRE")
            .arg("ledger")
            .arg("a")
            .arg(30)
            .arg("FENCE")
            .query(&mut c)
            .unwrap();
        let retry: Option<i64> = redis::cmd("LOCK.ACQUIRE")
            .arg("ledger")
            .arg("a")
            .arg(30)
            .arg("FENCE")
            .query(&mut c)
            .unwrap();
        assert_eq!(retry, Some(f1), "the holder's retry gets its fence");
        let other: Option<i64> = redis::cmd("LOCK.ACQUIRE")
            .arg("ledger")
            .arg("b")
            .arg(30)
            .arg("FENCE")
            .query(&mut c)
            .unwrap();
        assert_eq!(other, None);

        // a fenced waiter gets its fence when handed the lock
        let mut cmd = redis::cmd("LOCK.ACQUIRE");
        cmd.arg("ledger")
            .arg("b")
            .arg(30)
            .arg("BLOCK")
            .arg(0)
            .arg("FENCE");
        let waiter: Blocked<Option<i64>> = block_on(&server, connect(&server, resp3), cmd, 1);
        assert!(release(&mut c, "ledger", "a"));
        let f2 = waiter.wait().expect("handed the lock");
        assert!(f2 > f1);
        assert_eq!(
            field::<Option<i64>>(&lock_info(&mut c, "ledger"), "fence"),
            Some(f2)
        );

        // token * with FENCE: (token, fence); nil when held
        assert!(release(&mut c, "ledger", "b"));
        let (token, f3): (String, i64) = redis::cmd("LOCK.ACQUIRE")
            .arg("ledger")
            .arg("*")
            .arg(30)
            .arg("FENCE")
            .query(&mut c)
            .unwrap();
        assert_eq!(token.len(), 24);
        assert!(f3 > f2);
        let none: Option<(String, i64)> = redis::cmd("LOCK.ACQUIRE")
            .arg("ledger")
            .arg("*")
            .arg(30)
            .arg("FENCE")
            .query(&mut c)
            .unwrap();
        assert_eq!(none, None);
        let mut cmd = redis::cmd("LOCK.ACQUIRE");
        cmd.arg("ledger")
            .arg("*")
            .arg(30)
            .arg("FENCE")
            .arg("BLOCK")
            .arg(0);
        let waiter: Blocked<Option<(String, i64)>> =
            block_on(&server, connect(&server, resp3), cmd, 1);
        assert!(release(&mut c, "ledger", &token));
        let (token2, f4) = waiter.wait().expect("handed the lock");
        assert_ne!(token2, token);
        assert!(f4 > f3);
    }
}

#[test]
fn bind_lets_go_when_the_connection_is_dropped() {
    let server = Server::start();
    for resp3 in [false, true] {
        let mut admin = connect(&server, resp3);
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
        let mut holder = connect(&server, resp3);
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("nightly")
            .arg("job-1")
            .arg(3600)
            .arg("BIND")
            .query(&mut holder)
            .unwrap();
        let holder_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut holder).unwrap();
        assert_eq!(
            field::<Option<i64>>(&lock_info(&mut admin, "nightly"), "bound_to"),
            Some(holder_id)
        );

        let mut waiter_conn = connect(&server, resp3);
        let waiter_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query(&mut waiter_conn)
            .unwrap();
        let mut cmd = redis::cmd("LOCK.ACQUIRE");
        cmd.arg("nightly")
            .arg("job-2")
            .arg(3600)
            .arg("BLOCK")
            .arg(0)
            .arg("BIND")
            .arg("FENCE");
        let waiter: Blocked<Option<i64>> = block_on(&server, waiter_conn, cmd, 1);

        drop(holder); // the "crash": the connection closes
        let (fence, waiter_conn) = waiter.wait_keep();
        assert!(fence.is_some(), "the waiter is handed the lock");
        assert_eq!(owner(&mut admin, "nightly").as_deref(), Some("job-2"));
        let info = lock_info(&mut admin, "nightly");
        assert_eq!(field::<Option<i64>>(&info, "bound_to"), Some(waiter_id));
        assert!(
            field::<i64>(&info, "ttl") > 3_500_000,
            "the TTL counts from the hand-over"
        );

        drop(waiter_conn); // and the waiter's connection goes in turn
        wait_for("LOCK.OWNER", None, || owner(&mut admin, "nightly"));
    }
}

/// Client-side pitfall: a read timeout shorter than BLOCK makes `query` fail, but the
/// connection stays open (the crate skips the late reply) and the server keeps the waiter, which
/// can then be handed the lock although the caller was told it failed. After such a timeout
/// drop the connection (the waiter then leaves the queue) or release with your token.
#[test]
fn read_timeout_shorter_than_block() {
    let server = Server::start();
    let mut admin = server.conn();
    let _: () = redis::cmd("LOCK.ACQUIRE")
        .arg("q")
        .arg("holder")
        .arg(30)
        .query(&mut admin)
        .unwrap();

    let mut impatient = connect(&server, false);
    impatient
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let err = redis::cmd("LOCK.ACQUIRE")
        .arg("q")
        .arg("impatient")
        .arg(30)
        .arg("BLOCK")
        .arg(0)
        .query::<Option<String>>(&mut impatient)
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(field::<i64>(&lock_info(&mut admin, "q"), "waiters"), 1);
    assert!(release(&mut admin, "q", "holder"));
    assert_eq!(owner(&mut admin, "q").as_deref(), Some("impatient"));
    // the same connection goes on working: the late OK is skipped
    impatient.set_read_timeout(None).unwrap();
    assert_eq!(owner(&mut impatient, "q").as_deref(), Some("impatient"));

    // dropping the connection after the timeout takes the waiter out of the queue
    let mut gone = connect(&server, false);
    gone.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let err = redis::cmd("LOCK.ACQUIRE")
        .arg("q")
        .arg("gone")
        .arg(30)
        .arg("BLOCK")
        .arg(0)
        .query::<Option<String>>(&mut gone)
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(gone);
    wait_for("LOCK.INFO waiters", 0, || {
        field::<i64>(&lock_info(&mut admin, "q"), "waiters")
    });
    assert!(release(&mut admin, "q", "impatient"));
    assert_eq!(owner(&mut admin, "q"), None);
}

/// The async API on tokio: `MultiplexedConnection`, `query_async`.
mod tokio_api {
    use super::common::{Server, DEADLINE};
    use redis::aio::MultiplexedConnection;
    use redis::{AsyncConnectionConfig, Value};
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    /// A connection with the crate's defaults (a 500 ms response timeout).
    async fn connect(server: &Server, resp3: bool) -> MultiplexedConnection {
        super::client(server, resp3)
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// A connection for blocking commands: no response timeout, so BLOCK decides how long the
    /// acquire waits.
    async fn connect_blocking(server: &Server, resp3: bool) -> MultiplexedConnection {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        super::client(server, resp3)
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }

    async fn info_field(c: &mut MultiplexedConnection, section: &str, field: &str) -> i64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
    }

    async fn wait_blocked(c: &mut MultiplexedConnection, n: i64) {
        let start = Instant::now();
        loop {
            let got = info_field(c, "clients", "blocked_clients").await;
            if got == n {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "blocked_clients stayed {got}, wanted {n}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn lock_info(c: &mut MultiplexedConnection, name: &str) -> HashMap<String, Value> {
        redis::cmd("LOCK.INFO")
            .arg(name)
            .query_async(c)
            .await
            .unwrap()
    }

    async fn owner(c: &mut MultiplexedConnection, name: &str) -> Option<String> {
        redis::cmd("LOCK.OWNER")
            .arg(name)
            .query_async(c)
            .await
            .unwrap()
    }

    async fn release(c: &mut MultiplexedConnection, name: &str, token: &str) -> bool {
        redis::cmd("LOCK.RELEASE")
            .arg(name)
            .arg(token)
            .query_async(c)
            .await
            .unwrap()
    }

    /// A spawned task's result, with the deadline.
    async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("no reply before the deadline")
            .unwrap()
    }

    #[tokio::test]
    async fn async_blocked_acquire_fence_and_bind() {
        let server = Server::start();
        for resp3 in [false, true] {
            let mut c = connect(&server, resp3).await;
            let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();

            let f1: i64 = redis::cmd("LOCK.ACQUIRE")
                .arg("jobs")
                .arg("holder")
                .arg(30)
                .arg("FENCE")
                .query_async(&mut c)
                .await
                .unwrap();
            let held: Option<String> = redis::cmd("LOCK.ACQUIRE")
                .arg("jobs")
                .arg("other")
                .arg(30)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(held, None);
            let info = lock_info(&mut c, "jobs").await;
            assert_eq!(
                redis::from_redis_value_ref::<Option<i64>>(&info["fence"]).unwrap(),
                Some(f1)
            );

            // a blocked acquire (its own connection, no response timeout) woken by a release
            let mut w = connect_blocking(&server, resp3).await;
            let waiter = tokio::spawn(async move {
                redis::cmd("LOCK.ACQUIRE")
                    .arg("jobs")
                    .arg("*")
                    .arg(30)
                    .arg("BLOCK")
                    .arg(0)
                    .arg("FENCE")
                    .query_async::<Option<(String, i64)>>(&mut w)
                    .await
            });
            wait_blocked(&mut c, 1).await;
            assert!(release(&mut c, "jobs", "holder").await);
            let (token, f2) = join(waiter).await.unwrap().expect("handed the lock");
            assert!(f2 > f1);
            assert_eq!(owner(&mut c, "jobs").await, Some(token.clone()));
            assert!(release(&mut c, "jobs", &token).await);

            // BIND: dropping the holder's connection (every clone) lets the lock go to the waiter
            let mut holder = connect(&server, resp3).await;
            let _: () = redis::cmd("LOCK.ACQUIRE")
                .arg("nightly")
                .arg("job-1")
                .arg(3600)
                .arg("BIND")
                .query_async(&mut holder)
                .await
                .unwrap();
            let mut w = connect_blocking(&server, resp3).await;
            let waiter = tokio::spawn(async move {
                let r = redis::cmd("LOCK.ACQUIRE")
                    .arg("nightly")
                    .arg("job-2")
                    .arg(3600)
                    .arg("BLOCK")
                    .arg(0)
                    .arg("BIND")
                    .query_async::<Option<String>>(&mut w)
                    .await;
                (r, w)
            });
            wait_blocked(&mut c, 1).await;
            drop(holder);
            let (reply, w) = join(waiter).await;
            assert_eq!(reply.unwrap().as_deref(), Some("OK"));
            assert_eq!(owner(&mut c, "nightly").await.as_deref(), Some("job-2"));
            drop(w);
            let start = Instant::now();
            while owner(&mut c, "nightly").await.is_some() {
                assert!(
                    start.elapsed() < DEADLINE,
                    "the BIND lock outlived its connection"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Pitfalls of `MultiplexedConnection` with a blocking acquire: the default response timeout
    /// (500 ms) fails an acquire that blocks longer, though the server keeps the waiter (which
    /// can then be handed the lock); and every command sent on the same connection (or a clone)
    /// waits behind the blocked one.
    #[tokio::test]
    async fn async_pitfalls() {
        let server = Server::start();
        let mut admin = connect(&server, false).await;
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("q")
            .arg("holder")
            .arg(30)
            .query_async(&mut admin)
            .await
            .unwrap();

        let mut impatient = connect(&server, false).await; // default response timeout
        let err = redis::cmd("LOCK.ACQUIRE")
            .arg("q")
            .arg("impatient")
            .arg(30)
            .arg("BLOCK")
            .arg(0)
            .query_async::<Option<String>>(&mut impatient)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let waiters: i64 =
            redis::from_redis_value_ref(&lock_info(&mut admin, "q").await["waiters"]).unwrap();
        assert_eq!(waiters, 1, "the server still queues the timed-out acquire");
        assert!(release(&mut admin, "q", "holder").await);
        assert_eq!(owner(&mut admin, "q").await.as_deref(), Some("impatient"));
        assert!(release(&mut admin, "q", "impatient").await);

        // a shared connection: OWNER waits behind the blocked acquire sent before it
        let _: () = redis::cmd("LOCK.ACQUIRE")
            .arg("q")
            .arg("holder")
            .arg(30)
            .query_async(&mut admin)
            .await
            .unwrap();
        let mut shared = connect_blocking(&server, false).await;
        let mut clone = shared.clone();
        let acquire = tokio::spawn(async move {
            redis::cmd("LOCK.ACQUIRE")
                .arg("q")
                .arg("shared")
                .arg(30)
                .arg("BLOCK")
                .arg(0)
                .query_async::<Option<String>>(&mut shared)
                .await
        });
        wait_blocked(&mut admin, 1).await;
        let mut lookup = tokio::spawn(async move { owner(&mut clone, "q").await });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut lookup)
                .await
                .is_err(),
            "OWNER on the blocked connection answered while the acquire was blocked"
        );
        assert!(release(&mut admin, "q", "holder").await);
        assert_eq!(join(acquire).await.unwrap().as_deref(), Some("OK"));
        // answered only now, so after the hand-over
        assert_eq!(join(lookup).await.as_deref(), Some("shared"));
    }
}
