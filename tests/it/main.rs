//! One integration binary: scenarios named after behaviour, over real HTTP on 127.0.0.1.

mod examples;
#[path = "support/sinks/mod.rs"]
mod sink_support;
mod sinks;
