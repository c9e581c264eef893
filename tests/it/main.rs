//! One integration binary: scenarios named after behaviour, over real HTTP on 127.0.0.1.

mod calendar;
mod calendar_auth;
mod deploy;
mod examples;

mod membership;
mod membership_edges;
mod process;
mod replan;
mod sinks;
mod support;
