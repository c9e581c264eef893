//! Microsoft Graph: the only module that knows Graph URLs, JSON shapes, tokens, throttling and paging.
//!
//! - `auth`: app-only tokens through the `oauth2` crate (secret or certificate), cached and refreshed early.
//! - `assertion`: the certificate credential's `client_assertion` JWT (PS256 + `x5t#S256` or RS256 + `x5t`).
//! - `delegated`: device-code login and rotating refresh tokens for the signed-in account (calendars).
//! - `calendar`: typed group events and the `/groups/{id}/events` listing, direct or through `batch`.
//! - `batch`: JSON `$batch` of up to 20 requests, per-item status and per-item `Retry-After`.
//! - `client`: GET with rate limit, concurrency cap, `Retry-After`-aware retries, host pinning.
//! - `delta`: typed `/groups/delta` pages and directory-object collections.
//! - `error`: typed errors with `is_retryable` and the resync classification.

pub mod assertion;
pub mod auth;
pub mod batch;
pub mod calendar;
pub mod client;
pub mod delegated;
pub mod delta;
pub mod error;

pub use client::{GraphClient, MAX_GROUPS_PER_DELTA};
pub use delta::{DeltaPage, GroupDelta, LinkDelta, NextLink, Removed};
pub use error::{Error, Result};
