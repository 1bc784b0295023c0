//! The module's options: `CONFIG SET rlock.<name> <value>`, `CONFIG GET rlock.*`, and
//! `--loadmodule librlock.so <name> <value>` (registered in `lib.rs`).

use std::sync::Mutex;

use redis_module::enum_configuration;

enum_configuration! {
    /// `rlock.python-signal`: when a lock the module frees is signalled for python-redis-lock
    /// clients (`lock-signal:<name>`).
    #[allow(non_camel_case_types)]
    #[derive(Debug, PartialEq, Eq, Copy)]
    pub enum PythonSignal {
        /// Only when a python-redis-lock client may be waiting for that lock (the default).
        auto = 0,
        /// Every time, as python-redis-lock's own release does.
        always = 1,
        /// Never: for servers without python-redis-lock clients.
        never = 2,
    }
}

pub static PYTHON_SIGNAL: Mutex<PythonSignal> = Mutex::new(PythonSignal::auto);

pub fn python_signal() -> PythonSignal {
    *PYTHON_SIGNAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
