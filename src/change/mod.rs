//! Pure change logic, no I/O: normalize Graph pages into link observations, decide against stored state
//! whether an observation is a change (invariant 3), and give each change a deterministic id (invariant 4).
//! Calendars: `calendar` decides new/updated/deleted events from a listing and the seen set,
//! `event_envelope` turns them into `groupwatch.event.*` CloudEvents.

pub mod calendar;
pub mod dedup;
pub mod envelope;
pub mod event_envelope;
pub mod ids;
pub mod normalize;

pub use dedup::{LinkState, decide};
pub use envelope::{Change, ChangeKind, EventData};
pub use normalize::{Observation, Relationship, normalize};
