//! Measurements with and without the module on the one server: `MODULE UNLOAD rlock` and
//! `MODULE LOAD` of the same build between them (`server::set_module`), so both sides share the
//! process, its keyspace and its warmed-up allocator. Used by `tax` and `pycycle`.

use redis::Connection;

use crate::server::set_module;

/// The measurements of every pair, by side.
pub struct Sides<T> {
    pub without: Vec<T>,
    pub with: Vec<T>,
    /// How many times the server refused `MODULE UNLOAD` (a blocked client or an armed module
    /// timer); each refusal was retried.
    pub refused: u32,
}

impl<T> Sides<T> {
    pub fn new() -> Sides<T> {
        Sides {
            without: Vec::new(),
            with: Vec::new(),
            refused: 0,
        }
    }

    /// One measurement without the module and one right after it with it, or the other way
    /// round when `flip` (alternate it, and a drift over time favours neither side). Each
    /// starts on a module loaded afresh (or none): nothing one leaves in the module's state
    /// reaches the next. The module is loaded again at the end.
    pub fn pair(&mut self, admin: &mut Connection, flip: bool, mut measure: impl FnMut() -> T) {
        for loaded in [flip, !flip] {
            self.refused += set_module(admin, false);
            set_module(admin, loaded);
            let m = measure();
            if loaded {
                self.with.push(m);
            } else {
                self.without.push(m);
            }
        }
        set_module(admin, true);
    }
}
