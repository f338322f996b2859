//! baton — zero-downtime reloads for socket-activated services.
//!
//! The library behind the `baton` binary (`src/main.rs` is its command line). Every raw system
//! call lives in [`sys`], the one module allowed `unsafe`; the rest is safe Rust, and the lint
//! below keeps it so.

#![deny(unsafe_code)]

pub mod check;
pub mod client;
pub mod config;
pub mod control;
pub mod handover;
pub mod history;
pub mod load;
pub mod logging;
pub mod manual;
pub mod notify;
pub mod output;
pub mod readiness;
pub mod reference;
pub mod release;
pub mod sockets;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
pub mod units;
pub mod verify;
pub mod worker;
