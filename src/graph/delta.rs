//! Typed `/groups/delta` pages (GRAPH.md §1.2). Lenient where Graph is: ids are opaque strings, any field
//! may be missing or null, unknown fields are ignored.

use serde::{Deserialize, Deserializer};

/// One page of a delta round. Graph never sends both links; a page may be empty and still have a nextLink.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeltaPage {
    /// More pages follow in this round.
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// The round is complete; save this for the next round.
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
    /// Changed groups (a big group recurs over several pages with slices of its links).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub value: Vec<GroupDelta>,
}

/// Where a page points next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextLink {
    /// Fetch this to continue the round.
    Next(String),
    /// The round ended; this is the next round's start.
    Delta(String),
}

impl DeltaPage {
    /// The link to follow. A page carrying both (never documented) continues the round: more data wins.
    ///
    /// # Errors
    /// A description when the page has neither link.
    pub fn link(&self) -> Result<NextLink, String> {
        match (&self.next_link, &self.delta_link) {
            (Some(n), _) => Ok(NextLink::Next(n.clone())),
            (None, Some(d)) => Ok(NextLink::Delta(d.clone())),
            (None, None) => {
                Err("delta page has neither @odata.nextLink nor @odata.deltaLink".into())
            }
        }
    }
}

/// A group object in a delta page.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupDelta {
    /// Group object id. Documented examples with `$select` omit it, so it is optional here.
    #[serde(default)]
    pub id: Option<String>,
    /// Present only when selected.
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    /// Direct-member link changes.
    #[serde(rename = "members@delta", default, deserialize_with = "null_as_empty")]
    pub members: Vec<LinkDelta>,
    /// Owner link changes (with `$select=…,owners`).
    #[serde(rename = "owners@delta", default, deserialize_with = "null_as_empty")]
    pub owners: Vec<LinkDelta>,
    /// The group itself was deleted (`changed` = soft-deleted, `deleted` = gone for good).
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
}

/// One membership (or ownership) link: no `@removed` = present, `@removed` = gone.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct LinkDelta {
    /// `#microsoft.graph.user`, `#microsoft.graph.group` (nested group), other directory objects.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    /// Directory object id (opaque; not always a valid GUID in the docs).
    #[serde(default)]
    pub id: Option<String>,
    /// Set when the link was removed or the object deleted.
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
}

/// The `@removed` annotation.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Removed {
    /// `changed` (restorable) or `deleted` (permanent); both mean "no longer a member".
    #[serde(default)]
    pub reason: Option<String>,
}

/// `/groups/{id}/members` and other directoryObject collections.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DirectoryObjectPage {
    /// The next page, if any.
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// `@odata.count` (first page only, when requested).
    #[serde(rename = "@odata.count", default)]
    pub count: Option<u64>,
    /// The objects.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub value: Vec<DirectoryObject>,
}

/// A directory object as listed in a collection: its type and id, and a name when present.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DirectoryObject {
    /// OData type, e.g. `#microsoft.graph.user`.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    /// Object id (absent in some documented examples).
    #[serde(default)]
    pub id: Option<String>,
    /// Display name, when returned.
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `#microsoft.graph.user` → `user`; missing → `unknown`.
pub fn member_type(odata_type: Option<&str>) -> String {
    match odata_type {
        Some(t) => t
            .trim_start_matches('#')
            .trim_start_matches("microsoft.graph.")
            .to_owned(),
        None => "unknown".to_owned(),
    }
}
