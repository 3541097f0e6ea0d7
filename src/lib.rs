//! chartrl: reinforcement learning for small language models that answer questions about charts.
//!
//! The library holds everything; the `chartrl` binary is a thin command-line layer over it.

pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod eval;
pub mod fsx;
pub mod memory;
pub mod model;
pub mod options;
pub mod parallel;
pub mod plot;
pub mod report;
pub mod reward;
pub mod runs;
pub mod script;
pub mod store;
pub mod sweep;
pub mod train;
pub mod workspace;
