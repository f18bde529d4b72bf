//! The `portico` binary's library: command line, configuration and the wiring of the
//! roles. `main.rs` only parses the command line and calls [`cli::run`].

pub mod cli;
pub mod config;
mod console_page;
pub mod startup;
mod telemetry;

pub use startup::{Addresses, App};
