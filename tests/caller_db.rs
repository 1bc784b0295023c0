//! No module code path changes a caller's selected database (PROTOCOL.md, promise 4). The
//! module looks at a freed lock in the lock's database right after the command that freed it
//! (a post-notification job); on Valkey 8.1 that job runs on the client whose command raised
//! the event, so a lock freed in another database than the caller's, from `MULTI`/`EXEC` or a
//! script, must leave the caller where it was.

mod common;
use common::raw::*;
use common::*;
use std::time::Duration;

/// The database `CLIENT INFO` reports for this connection.
fn db_of(c: &mut Raw) -> i64 {
    let info = c.call(&["CLIENT", "INFO"]).text().expect("CLIENT INFO");
    info.split_whitespace()
        .find_map(|f| f.strip_prefix("db="))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no db= in {info}"))
}

/// Free `lock:m` of database 3 by `how` from a client whose database is 0, with and without a
/// module waiter to hand it to.
fn freed_in_db_3(how: &str, free: &[&[&str]]) {
    let s = Server::start();
    for with_waiter in [false, true] {
        let mut holder = Raw::connect(&s);
        assert_eq!(holder.call(&["SELECT", "3"]), R::ok());
        holder.acquire("m", "t");
        let mut waiter = Raw::connect(&s);
        if with_waiter {
            assert_eq!(waiter.call(&["SELECT", "3"]), R::ok());
            waiter.send(&[&["LOCK.ACQUIRE", "m", "w", "60", "BLOCK", "0"]]);
            s.wait_blocked(1);
        }
        let mut caller = Raw::connect(&s);
        assert_eq!(db_of(&mut caller), 0);
        for cmd in free {
            caller.call(cmd);
        }
        assert_eq!(
            db_of(&mut caller),
            0,
            "{how} (waiter: {with_waiter}) moved the caller"
        );
        // The lock was looked at all the same: handed to the waiter, or free.
        if with_waiter {
            assert_eq!(waiter.next(Duration::from_secs(5)), Ok(R::ok()), "{how}");
            assert_eq!(holder.owner("m").as_deref(), Some("w"), "{how}");
            assert_eq!(holder.release("m", "w"), 1);
        } else {
            assert_eq!(holder.owner("m"), None, "{how}");
        }
        // And the caller's next commands run in its own database.
        assert_eq!(caller.call(&["SET", "mine", "1"]), R::ok());
        assert_eq!(
            holder.call(&["EXISTS", "mine"]),
            R::Int(0),
            "{how}: written in db 3"
        );
        assert_eq!(caller.call(&["DEL", "mine"]), R::Int(1));
    }
}

#[test]
fn a_lock_freed_in_another_database_inside_multi_leaves_the_caller_in_its_own() {
    freed_in_db_3(
        "MULTI",
        &[
            &["MULTI"],
            &["SELECT", "3"],
            &["DEL", "lock:m"],
            &["SELECT", "0"],
            &["EXEC"],
        ],
    );
}

#[test]
fn a_lock_freed_in_another_database_by_a_script_leaves_the_caller_in_its_own() {
    freed_in_db_3(
        "EVAL",
        &[&[
            "EVAL",
            "redis.call('SELECT', 3); redis.call('DEL', 'lock:m'); return 1",
            "0",
        ]],
    );
}

#[test]
fn a_lock_released_in_another_database_inside_multi_leaves_the_caller_in_its_own() {
    freed_in_db_3(
        "LOCK.RELEASE in MULTI",
        &[
            &["MULTI"],
            &["SELECT", "3"],
            &["LOCK.RELEASE", "m", "t"],
            &["SELECT", "0"],
            &["EXEC"],
        ],
    );
}

#[test]
fn a_lock_freed_in_another_database_by_a_function_leaves_the_caller_in_its_own() {
    let lib = "#!lua name=freeing\n\
               redis.register_function('free_in_3', function(keys, args) \
               redis.call('SELECT', 3); redis.call('DEL', 'lock:m'); return 1 end)";
    freed_in_db_3(
        "FCALL",
        &[
            &["FUNCTION", "LOAD", "REPLACE", lib],
            &["FCALL", "free_in_3", "0"],
        ],
    );
}
