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

/// The load arguments (`--loadmodule librlock.so <name> <value> ...`), applied. Every name
/// must be an option's and every value one it takes: anything else is refused with a
/// sentence for the log naming it, and the module does not load (a misspelt option must not
/// leave the default in force unnoticed). A load argument overrides `rlock.<name>` from the
/// configuration file.
pub fn apply_load_args(args: &[&[u8]]) -> Result<(), String> {
    let mut chosen = None;
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0][..pair[0].len().min(128)]).into_owned();
        let Some(value) = pair.get(1) else {
            return Err(format!(
                "rlock: load option '{name}' has no value (expected: python-signal auto|always|never)"
            ));
        };
        if !pair[0].eq_ignore_ascii_case(b"python-signal") {
            return Err(format!(
                "rlock: unknown load option '{name}' (expected: python-signal auto|always|never)"
            ));
        }
        let policy = [
            (&b"auto"[..], PythonSignal::auto),
            (b"always", PythonSignal::always),
            (b"never", PythonSignal::never),
        ]
        .into_iter()
        .find(|(word, _)| value.eq_ignore_ascii_case(word))
        .map(|(_, p)| p);
        let Some(policy) = policy else {
            let value = String::from_utf8_lossy(&value[..value.len().min(128)]).into_owned();
            return Err(format!(
                "rlock: bad value '{value}' for load option python-signal (expected auto, always or never)"
            ));
        };
        chosen = Some(policy);
    }
    if let Some(policy) = chosen {
        *PYTHON_SIGNAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_arguments_are_checked_whole() {
        assert!(apply_load_args(&[]).is_ok());
        let err = |args: &[&[u8]]| apply_load_args(args).unwrap_err();
        assert!(err(&[b"python-signl", b"never"]).contains("unknown load option 'python-signl'"));
        assert!(err(&[b"python-signal", b"nevr"]).contains("bad value 'nevr'"));
        assert!(err(&[b"python-signal"]).contains("has no value"));
        assert!(err(&[b"python-signal", b"never", b"x", b"y"]).contains("'x'"));
        assert_eq!(python_signal(), PythonSignal::auto, "nothing applied");
        assert!(apply_load_args(&[b"python-signal", b"NEVER"]).is_ok());
        assert_eq!(python_signal(), PythonSignal::never);
        assert!(apply_load_args(&[b"python-signal", b"auto"]).is_ok());
    }
}
