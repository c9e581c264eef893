//! Delta page → flat list of link observations, restricted to the groups a batch actually watches.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::graph::DeltaPage;
use crate::graph::delta::{LinkDelta, member_type};

/// Which relationship of a group a link belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    /// `members@delta`
    Members,
    /// `owners@delta`
    Owners,
}

impl Relationship {
    /// Key and event-type fragment: `member` / `owner`.
    pub fn singular(self) -> &'static str {
        match self {
            Relationship::Members => "member",
            Relationship::Owners => "owner",
        }
    }
}

/// What one delta entry says about one link *now* (Graph reports current state, not history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Group object id.
    pub group: String,
    /// Members or owners.
    pub rel: Relationship,
    /// The member's (or owner's) object id.
    pub member: String,
    /// `user`, `group` (nested group), … or `unknown`.
    pub member_type: String,
    /// False when the entry carried `@removed`.
    pub present: bool,
    /// The `@removed.reason`, when removed.
    pub reason: Option<String>,
}

/// A page, normalized.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Link observations in page order.
    pub links: Vec<Observation>,
    /// Watched groups that came back with a top-level `@removed` (the group was deleted).
    pub deleted_groups: Vec<(String, Option<String>)>,
    /// Entries without an id, or for groups this batch does not watch: skipped.
    pub skipped: usize,
}

/// Flattens a page. `watched` holds the batch's active group ids; others are skipped (a group removed from
/// the configuration may still be in the saved delta link's filter).
pub fn normalize(page: &DeltaPage, watched: &HashSet<String>) -> Normalized {
    let mut out = Normalized::default();
    for g in &page.value {
        let Some(group) = g.id.as_deref().filter(|id| watched.contains(*id)) else {
            out.skipped += 1 + g.members.len() + g.owners.len();
            continue;
        };
        if let Some(r) = &g.removed {
            out.deleted_groups
                .push((group.to_owned(), r.reason.clone()));
        }
        for (rel, links) in [
            (Relationship::Members, &g.members),
            (Relationship::Owners, &g.owners),
        ] {
            for link in links {
                match observe(group, rel, link) {
                    Some(o) => out.links.push(o),
                    None => out.skipped += 1,
                }
            }
        }
    }
    out
}

fn observe(group: &str, rel: Relationship, link: &LinkDelta) -> Option<Observation> {
    let member = link.id.as_deref().filter(|s| !s.is_empty())?;
    Some(Observation {
        group: group.to_owned(),
        rel,
        member: member.to_owned(),
        member_type: member_type(link.odata_type.as_deref()),
        present: link.removed.is_none(),
        reason: link
            .removed
            .as_ref()
            .map(|r| r.reason.clone().unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> DeltaPage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn removed_and_added_entries_become_observations() {
        let p = page(
            r##"{"@odata.deltaLink":"d","value":[{"id":"g1","members@delta":[
            {"@odata.type":"#microsoft.graph.user","id":"u1","@removed":{"reason":"deleted"}},
            {"@odata.type":"#microsoft.graph.group","id":"g9"}]}]}"##,
        );
        let n = normalize(&p, &HashSet::from(["g1".to_string()]));
        assert_eq!(n.links.len(), 2);
        assert!(!n.links[0].present);
        assert_eq!(n.links[0].reason.as_deref(), Some("deleted"));
        assert_eq!(n.links[1].member_type, "group");
        assert!(n.links[1].present);
    }

    #[test]
    fn unwatched_groups_and_idless_entries_are_skipped() {
        let p = page(
            r##"{"value":[{"id":"other","members@delta":[{"id":"u1"}]},
            {"id":"g1","members@delta":[{"@odata.type":"#microsoft.graph.user"}, {"id":"u2"}]},
            {"displayName":"no id"}]}"##,
        );
        let n = normalize(&p, &HashSet::from(["g1".to_string()]));
        assert_eq!(n.links.len(), 1);
        assert_eq!(n.links[0].member_type, "unknown");
        assert_eq!(n.skipped, 4);
    }

    #[test]
    fn owners_and_deleted_groups_are_reported() {
        let p = page(
            r#"{"value":[{"id":"g1","owners@delta":[{"id":"o1"}],"members@delta":null},
            {"id":"g2","@removed":{"reason":"changed"}}]}"#,
        );
        let watched = HashSet::from(["g1".to_string(), "g2".to_string()]);
        let n = normalize(&p, &watched);
        assert_eq!(n.links[0].rel, Relationship::Owners);
        assert_eq!(
            n.deleted_groups,
            vec![("g2".into(), Some("changed".into()))]
        );
    }
}
