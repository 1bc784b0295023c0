//! `MODULE UNLOAD` never leaves the server pointing into the unloaded module: the server keeps
//! each client's last command (and a transaction's queued commands) as pointers into the
//! module's command table (redis/redis#10259), and a `CLIENT LIST` or `EXEC` after the unload
//! would read freed memory (a SIGSEGV at the next `MODULE LOAD` on 7.2+). So the unload is
//! refused while such a client exists, and allowed once none does.

mod common;
use common::raw::*;
use common::*;

fn unload(c: &mut Raw) -> R {
    c.call(&["MODULE", "UNLOAD", "rlock"])
}

#[test]
fn unload_waits_until_no_client_points_at_a_lock_command() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let mut a = Raw::connect(&s);
    assert_eq!(a.owner("x"), None);
    // A's last command is LOCK.OWNER: refused.
    assert!(
        matches!(unload(&mut admin), R::Error(_)),
        "unloaded under a client pointing at LOCK.OWNER"
    );
    assert_eq!(admin.call(&["PING"]), R::Status("PONG".into()));
    // A transaction holding a queued LOCK.* command, whatever its last command: refused.
    assert_eq!(a.call(&["MULTI"]), R::ok());
    assert_eq!(
        a.call(&["LOCK.ACQUIRE", "x", "t", "60"]),
        R::Status("QUEUED".into())
    );
    assert_eq!(a.call(&["PING"]), R::Status("QUEUED".into()));
    assert!(
        matches!(unload(&mut admin), R::Error(_)),
        "unloaded under a queued LOCK.ACQUIRE"
    );
    assert_eq!(a.call(&["DISCARD"]), R::ok());
    // Every client has moved on: allowed, and the server stays up through a reload.
    assert_eq!(unload(&mut admin), R::ok());
    let module = module_path();
    let module = module.to_str().unwrap();
    assert_eq!(admin.call(&["MODULE", "LOAD", module]), R::ok());
    assert!(matches!(admin.call(&["CLIENT", "LIST"]), R::Bulk(Some(_))));
    assert_eq!(a.call(&["LOCK.ACQUIRE", "x", "t", "60"]), R::ok());
}

/// The reviewer's case: many clients that ran LOCK.* commands, then unload and load again
/// (a SIGSEGV in `CLIENT LIST` at load on 7.2.6, 7.4.1, Valkey 8.1.8 and 9.1.2 before).
#[test]
fn reload_with_clients_that_ran_lock_commands_keeps_the_server_up() {
    let s = Server::start();
    let mut admin = Raw::connect(&s);
    let mut clients: Vec<Raw> = (0..20).map(|_| Raw::connect(&s)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let name = format!("n{i}");
        assert_eq!(c.call(&["LOCK.ACQUIRE", &name, "t", "60"]), R::ok());
    }
    let module = module_path();
    let module = module.to_str().unwrap();
    for _ in 0..3 {
        assert!(matches!(unload(&mut admin), R::Error(_)));
        assert!(matches!(admin.call(&["CLIENT", "LIST"]), R::Bulk(Some(_))));
    }
    for c in &mut clients {
        assert_eq!(c.call(&["PING"]), R::Status("PONG".into()));
    }
    for _ in 0..3 {
        assert_eq!(unload(&mut admin), R::ok());
        assert_eq!(admin.call(&["MODULE", "LOAD", module]), R::ok());
        assert!(matches!(admin.call(&["CLIENT", "LIST"]), R::Bulk(Some(_))));
    }
    assert_eq!(clients[0].owner("n0").as_deref(), Some("t"));
}
