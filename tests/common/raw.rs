//! A raw RESP2 connection for tests that must see every reply exactly as sent: commands are
//! written by hand (several in one write, so the server reads them in one event-loop pass) and
//! replies parsed one by one, each read with a deadline. A second reply to one command shows
//! up as a shifted stream.
#![allow(dead_code)]

use super::{Server, DEADLINE};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub enum R {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<R>>),
}

impl R {
    pub fn ok() -> R {
        R::Status("OK".into())
    }
    pub fn nil() -> R {
        R::Bulk(None)
    }
    pub fn int(&self) -> i64 {
        match self {
            R::Int(n) => *n,
            other => panic!("wanted an integer, got {other:?}"),
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            R::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            R::Bulk(None) => None,
            other => panic!("wanted a bulk string or nil, got {other:?}"),
        }
    }
}

/// How a read ended without a reply.
#[derive(Debug, PartialEq)]
pub enum End {
    /// The server closed the connection.
    Closed,
    /// Nothing came before the deadline.
    Quiet,
}

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

pub struct Raw {
    stream: Stream,
    buf: Vec<u8>,
}

/// One complete reply at the start of `b` and its length, or None if more bytes are needed.
pub fn parse(b: &[u8]) -> Option<(R, usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&b[1..end]).into_owned();
    let rest = end + 2;
    match b[0] {
        b'+' => Some((R::Status(line), rest)),
        b'-' => Some((R::Error(line), rest)),
        b':' => Some((R::Int(line.parse().expect("integer reply")), rest)),
        b'$' => {
            let n: i64 = line.parse().expect("bulk length");
            if n < 0 {
                return Some((R::Bulk(None), rest));
            }
            let n = n as usize;
            if b.len() < rest + n + 2 {
                return None;
            }
            Some((R::Bulk(Some(b[rest..rest + n].to_vec())), rest + n + 2))
        }
        b'*' => {
            let n: i64 = line.parse().expect("array length");
            if n < 0 {
                return Some((R::Array(None), rest));
            }
            let (mut items, mut at) = (Vec::new(), rest);
            for _ in 0..n {
                let (item, len) = parse(&b[at..])?;
                items.push(item);
                at += len;
            }
            Some((R::Array(Some(items)), at))
        }
        other => panic!("not RESP2: {:?}", other as char),
    }
}

pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Raw {
    pub fn connect(s: &Server) -> Raw {
        let stream = match s.url.strip_prefix("redis+unix://") {
            Some(path) => Stream::Unix(UnixStream::connect(path).unwrap()),
            None => Stream::Tcp(TcpStream::connect(("127.0.0.1", s.port.unwrap())).unwrap()),
        };
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write `cmds` as ONE write, so that the server reads them together (one event-loop pass).
    pub fn send<A: AsRef<[u8]>>(&mut self, cmds: &[&[A]]) {
        let bytes: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
        let r = match &mut self.stream {
            Stream::Unix(s) => s.write_all(&bytes),
            Stream::Tcp(s) => s.write_all(&bytes),
        };
        r.expect("write to the server");
    }

    /// The next reply, if one comes within `within`.
    pub fn next(&mut self, within: Duration) -> Result<R, End> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((r, n)) = parse(&self.buf) {
                self.buf.drain(..n);
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Quiet);
            }
            let mut chunk = [0u8; 64 * 1024];
            let got = match &mut self.stream {
                Stream::Unix(s) => s
                    .set_read_timeout(Some(left))
                    .and_then(|_| s.read(&mut chunk)),
                Stream::Tcp(s) => s
                    .set_read_timeout(Some(left))
                    .and_then(|_| s.read(&mut chunk)),
            };
            match got {
                Ok(0) => return Err(End::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Closed), // reset by the server
            }
        }
    }

    /// A reply that has already arrived, without waiting: `Err(End::Quiet)` if none has.
    pub fn poll(&mut self) -> Result<R, End> {
        if let Some((r, n)) = parse(&self.buf) {
            self.buf.drain(..n);
            return Ok(r);
        }
        let mut chunk = [0u8; 64 * 1024];
        let got = match &mut self.stream {
            Stream::Unix(s) => s.set_nonblocking(true).and_then(|_| {
                let got = s.read(&mut chunk);
                s.set_nonblocking(false).map(|_| got)
            }),
            Stream::Tcp(s) => s.set_nonblocking(true).and_then(|_| {
                let got = s.read(&mut chunk);
                s.set_nonblocking(false).map(|_| got)
            }),
        };
        match got {
            Ok(Ok(0)) => Err(End::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                match parse(&self.buf) {
                    Some((r, n)) => {
                        self.buf.drain(..n);
                        Ok(r)
                    }
                    // Part of a reply: the rest is on its way.
                    None => self.next(DEADLINE),
                }
            }
            Ok(Err(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Err(End::Quiet)
            }
            Ok(Err(_)) | Err(_) => Err(End::Closed),
        }
    }

    /// The next reply; fails the test if none comes before the deadline.
    pub fn read(&mut self, what: &str) -> R {
        self.next(DEADLINE)
            .unwrap_or_else(|e| panic!("{what}: no reply ({e:?})"))
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> R {
        self.send(&[args]);
        let what: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(&a.as_ref()[..a.as_ref().len().min(40)]).into_owned())
            .collect();
        self.read(&what.join(" "))
    }

    pub fn owner(&mut self, name: &str) -> Option<String> {
        self.call(&["LOCK.OWNER", name]).text()
    }

    pub fn acquire(&mut self, name: &str, token: &str) {
        assert_eq!(self.call(&["LOCK.ACQUIRE", name, token, "60"]), R::ok());
    }

    /// python-redis-lock's failing `SET lock:<name> <id> NX EX 60` (see `common::python_tries`).
    pub fn python_tries(&mut self, name: &str) {
        let lock = format!("lock:{name}");
        let r = self.call(&["SET", lock.as_str(), "py-attempt", "NX", "EX", "60"]);
        assert_eq!(r, R::nil(), "python_tries: {lock} should be held");
    }

    pub fn release(&mut self, name: &str, token: &str) -> i64 {
        self.call(&["LOCK.RELEASE", name, token]).int()
    }
}

impl Raw {
    /// Every reply until the server closes the connection (which must happen before the deadline).
    pub fn read_to_close(&mut self, what: &str) -> Vec<R> {
        let mut replies = Vec::new();
        let start = Instant::now();
        loop {
            match self.next(DEADLINE.saturating_sub(start.elapsed())) {
                Ok(r) => replies.push(r),
                Err(End::Closed) => return replies,
                Err(End::Quiet) => {
                    panic!("{what}: the connection was not closed; replies so far {replies:?}")
                }
            }
        }
    }

    /// The waiter's reply is `want`, and it is the only one: the next reply on the same
    /// connection answers a PING.
    pub fn answered_once(&mut self, want: &R, what: &str) {
        let (got, next) = self.reply_then_ping(what);
        assert_eq!(
            next,
            R::Status("PONG".into()),
            "{what}: a second reply after {got:?}"
        );
        assert_eq!(&got, want, "{what}: the waiter's reply");
    }

    /// The waiter's reply, and the reply that follows it once PING is sent (PONG, unless the
    /// waiter got a second reply).
    pub fn reply_then_ping(&mut self, what: &str) -> (R, R) {
        let got = self.read(what);
        self.send(&[&["PING"]]);
        let next = self.read(&format!("{what}: PING after the reply"));
        (got, next)
    }
}
