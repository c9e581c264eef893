//! State-based deduplication (invariant 3): an observation is a change only when it differs from the
//! stored state of that (group, relationship, member) link.

use serde::{Deserialize, Serialize};

use super::envelope::ChangeKind;
use super::normalize::Observation;

/// What the store remembers per link. Removed links are kept (present = false) so the version counter
/// survives and a legitimate re-add gets a new event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Currently a member.
    pub present: bool,
    /// Bumped on every real change; part of the event id.
    pub version: u64,
    /// `user`, `group`, … as last seen.
    pub member_type: String,
    /// The full-sync epoch in which the link was last seen present; a resync removes links it did not see.
    pub seen_epoch: u64,
}

/// Applies one observation to the stored state. Returns the new state and the change, if it is one.
/// `epoch` is the batch's current full-sync epoch.
pub fn decide(
    prev: Option<&LinkState>,
    obs: &Observation,
    epoch: u64,
) -> (LinkState, Option<ChangeKind>) {
    let was_present = prev.is_some_and(|p| p.present);
    let version = prev.map_or(0, |p| p.version);
    let seen_epoch = if obs.present {
        epoch
    } else {
        prev.map_or(0, |p| p.seen_epoch)
    };
    let member_type = if obs.member_type == "unknown" {
        prev.map_or_else(|| obs.member_type.clone(), |p| p.member_type.clone())
    } else {
        obs.member_type.clone()
    };
    let change = match (was_present, obs.present) {
        (false, true) => Some(ChangeKind::Added),
        (true, false) => Some(ChangeKind::Removed),
        _ => None,
    };
    let state = LinkState {
        present: obs.present,
        version: if change.is_some() {
            version + 1
        } else {
            version
        },
        member_type,
        seen_epoch,
    };
    (state, change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Relationship;

    fn obs(present: bool) -> Observation {
        Observation {
            group: "g".into(),
            rel: Relationship::Members,
            member: "u".into(),
            member_type: "user".into(),
            present,
            reason: (!present).then(|| "deleted".into()),
        }
    }

    #[test]
    fn first_add_is_a_change_with_version_one() {
        let (s, c) = decide(None, &obs(true), 1);
        assert_eq!(c, Some(ChangeKind::Added));
        assert_eq!(s.version, 1);
        assert!(s.present);
    }

    #[test]
    fn replayed_add_of_a_member_is_not_a_change() {
        let (s, _) = decide(None, &obs(true), 1);
        let (s2, c) = decide(Some(&s), &obs(true), 1);
        assert_eq!(c, None);
        assert_eq!(s2.version, s.version);
    }

    #[test]
    fn removal_of_a_non_member_is_not_a_change() {
        assert_eq!(decide(None, &obs(false), 1).1, None);
        let (s, _) = decide(None, &obs(true), 1);
        let (s, c) = decide(Some(&s), &obs(false), 1);
        assert_eq!(c, Some(ChangeKind::Removed));
        assert_eq!(decide(Some(&s), &obs(false), 1).1, None);
    }

    #[test]
    fn add_remove_add_bumps_the_version_each_time() {
        let (s1, c1) = decide(None, &obs(true), 1);
        let (s2, c2) = decide(Some(&s1), &obs(false), 1);
        let (s3, c3) = decide(Some(&s2), &obs(true), 1);
        assert_eq!(
            [c1, c2, c3],
            [
                Some(ChangeKind::Added),
                Some(ChangeKind::Removed),
                Some(ChangeKind::Added)
            ]
        );
        assert_eq!([s1.version, s2.version, s3.version], [1, 2, 3]);
    }

    #[test]
    fn seen_epoch_moves_only_on_presence() {
        let (s, _) = decide(None, &obs(true), 3);
        assert_eq!(s.seen_epoch, 3);
        let (s, _) = decide(Some(&s), &obs(false), 4);
        assert_eq!(s.seen_epoch, 3);
    }

    #[test]
    fn unknown_member_type_keeps_the_known_one() {
        let (s, _) = decide(None, &obs(true), 1);
        let mut o = obs(false);
        o.member_type = "unknown".into();
        assert_eq!(decide(Some(&s), &o, 1).0.member_type, "user");
    }
}
