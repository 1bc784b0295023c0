//! The workloads, one module each; each runs against the one server and returns its figures
//! for the report. `alternate` is not a workload: the with/without-module pairs of measurements.

pub mod alternate;
pub mod contended;
pub mod expiry;
pub mod memory;
pub mod release;
pub mod uncontended;
