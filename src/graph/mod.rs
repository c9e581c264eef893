//! Microsoft Graph: the only module that knows Graph URLs, JSON shapes, tokens, throttling and paging.
//!
//! - `auth`: app-only tokens through the `oauth2` crate, cached and refreshed early.
//! - `client`: GET with rate limit, concurrency cap, `Retry-After`-aware retries, host pinning.
//! - `delta`: typed `/groups/delta` pages and directory-object collections.
//! - `error`: typed errors with `is_retryable` and the resync classification.

pub mod auth;
pub mod client;
pub mod delta;
pub mod error;

pub use client::{GraphClient, MAX_GROUPS_PER_DELTA};
pub use delta::{DeltaPage, GroupDelta, LinkDelta, NextLink, Removed};
pub use error::{Error, Result};
