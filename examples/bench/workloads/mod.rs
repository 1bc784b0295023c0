//! The workloads, one module each; each runs against the one server and returns its figures
//! for the report. `alternate` is not a workload: the with/without-module rounds of `tax` and
//! `pycycle`.

pub mod alternate;
pub mod contended;
pub mod expiry;
pub mod memory;
pub mod mixed;
pub mod pycycle;
pub mod release;
pub mod tax;
pub mod uncontended;
