//! The directory: groups, their member and owner links, and the change log delta reads.
//!
//! Every mutation appends to the log; a delta position is an index into it. Rounds are
//! computed from the log but always report each link's *current* state, which is how Graph
//! collapses several changes to one link between polls.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::{MemberKind, RemovedReason};

/// A directory-object relationship delta can track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Rel {
    Members,
    Owners,
}

/// `(group, relationship, member)`, ordered so iteration is deterministic.
type LinkKey = (String, Rel, String);

struct Group {
    display_name: String,
    deleted: bool,
}

struct Link {
    kind: MemberKind,
    present: bool,
    reason: RemovedReason,
}

enum Change {
    /// The group object itself changed (created, restored, renamed or deleted).
    Group(String),
    Link(LinkKey),
}

/// What a round looks at: which relationships, whether `displayName` is included, which groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Selection {
    pub members: bool,
    pub owners: bool,
    pub display_name: bool,
    /// `None` means every group.
    pub ids: Option<BTreeSet<String>>,
}

impl Selection {
    fn wants_group(&self, id: &str) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(id))
    }

    fn wants_rel(&self, rel: Rel) -> bool {
        match rel {
            Rel::Members => self.members,
            Rel::Owners => self.owners,
        }
    }
}

/// One `members@delta` / `owners@delta` entry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub rel: Rel,
    pub id: String,
    pub kind: MemberKind,
    pub removed: Option<RemovedReason>,
}

/// One group object of a round before paging; paging may split its entries.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub group: String,
    /// `Some` when `displayName` is selected and the group is alive.
    pub display_name: Option<String>,
    /// The group itself is deleted: top-level `@removed` and no entries.
    pub removed: bool,
    pub entries: Vec<Entry>,
}

/// The simulated directory.
#[derive(Default)]
pub(super) struct Tenant {
    groups: BTreeMap<String, Group>,
    links: BTreeMap<LinkKey, Link>,
    log: Vec<Change>,
}

impl Tenant {
    /// Current end of the change log: the position a new deltaLink points at.
    pub fn position(&self) -> usize {
        self.log.len()
    }

    /// True if the group exists and is not deleted.
    pub fn is_alive(&self, id: &str) -> bool {
        self.groups.get(id).is_some_and(|g| !g.deleted)
    }

    pub fn create_group(&mut self, id: &str, display_name: &str) {
        let group = Group {
            display_name: display_name.to_owned(),
            deleted: false,
        };
        self.groups.insert(id.to_owned(), group);
        self.log.push(Change::Group(id.to_owned()));
    }

    pub fn delete_group(&mut self, id: &str) {
        if let Some(g) = self.groups.get_mut(id).filter(|g| !g.deleted) {
            g.deleted = true;
            self.log.push(Change::Group(id.to_owned()));
        }
    }

    pub fn add_link(&mut self, group: &str, rel: Rel, member: &str, kind: MemberKind) -> bool {
        if !self.is_alive(group) {
            return false;
        }
        let key = (group.to_owned(), rel, member.to_owned());
        let link = self.links.entry(key.clone()).or_insert(Link {
            kind,
            present: false,
            reason: RemovedReason::Deleted,
        });
        if link.present {
            return false;
        }
        link.present = true;
        link.kind = kind;
        self.log.push(Change::Link(key));
        true
    }

    pub fn remove_link(&mut self, group: &str, rel: Rel, member: &str, why: RemovedReason) -> bool {
        if !self.is_alive(group) {
            return false;
        }
        let key = (group.to_owned(), rel, member.to_owned());
        match self.links.get_mut(&key) {
            Some(link) if link.present => {
                link.present = false;
                link.reason = why;
                self.log.push(Change::Link(key));
                true
            }
            _ => false,
        }
    }

    /// Present links of one relationship, sorted by member id; empty for dead groups.
    pub fn current_links(&self, group: &str, rel: Rel) -> Vec<(String, MemberKind)> {
        if !self.is_alive(group) {
            return Vec::new();
        }
        self.links_of(group)
            .filter(|((_, r, _), l)| *r == rel && l.present)
            .map(|((_, _, m), l)| (m.clone(), l.kind))
            .collect()
    }

    fn links_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = (&'a LinkKey, &'a Link)> {
        let from = (group.to_owned(), Rel::Members, String::new());
        self.links
            .range(from..)
            .take_while(move |((g, _, _), _)| g == group)
    }

    fn entry(&self, key: &LinkKey) -> Option<Entry> {
        let link = self.links.get(key)?;
        Some(Entry {
            rel: key.1,
            id: key.2.clone(),
            kind: link.kind,
            removed: (!link.present).then_some(link.reason),
        })
    }

    fn item(&self, sel: &Selection, group: &str, entries: Vec<Entry>) -> Item {
        let alive = self.is_alive(group);
        let display_name = self.groups.get(group).filter(|_| alive && sel.display_name);
        Item {
            group: group.to_owned(),
            display_name: display_name.map(|g| g.display_name.clone()),
            removed: !alive,
            entries: if alive { entries } else { Vec::new() },
        }
    }

    /// The initial round: every selected live group with its current links, optionally with
    /// `@removed` entries for links that were removed earlier.
    pub fn snapshot(&self, sel: &Selection, include_removed: bool) -> Vec<Item> {
        let alive = self
            .groups
            .iter()
            .filter(|(id, g)| !g.deleted && sel.wants_group(id));
        alive
            .map(|(id, _)| {
                let entries = self
                    .links_of(id)
                    .filter(|((_, rel, _), l)| {
                        sel.wants_rel(*rel) && (l.present || include_removed)
                    })
                    .filter_map(|(key, _)| self.entry(key))
                    .collect();
                self.item(sel, id, entries)
            })
            .collect()
    }

    /// A delta round from `pos`: every link and group changed since, in its current state,
    /// plus `replay_fraction` of the links changed at or before `pos` (Graph replays).
    pub fn changes_since(
        &self,
        sel: &Selection,
        pos: usize,
        replay_fraction: f64,
        rng: &mut impl Rng,
    ) -> Vec<Item> {
        let pos = pos.min(self.log.len());
        let (mut groups, mut links) = self.changed(sel, &self.log[pos..]);
        let (_, old) = self.changed(sel, &self.log[..pos]);
        let old: Vec<LinkKey> = old.into_iter().filter(|k| self.is_alive(&k.0)).collect();
        let wanted = (replay_fraction.clamp(0.0, 1.0) * old.len() as f64).round() as usize;
        for i in rand::seq::index::sample(rng, old.len(), wanted.min(old.len())) {
            groups.insert(old[i].0.clone());
            links.insert(old[i].clone());
        }
        groups
            .iter()
            .map(|g| {
                let range = (g.clone(), Rel::Members, String::new())..;
                let entries = links
                    .range(range)
                    .take_while(|k| &k.0 == g)
                    .filter_map(|k| self.entry(k))
                    .collect();
                self.item(sel, g, entries)
            })
            .collect()
    }

    /// Distinct groups and links touched by `changes` that the selection covers.
    fn changed(
        &self,
        sel: &Selection,
        changes: &[Change],
    ) -> (BTreeSet<String>, BTreeSet<LinkKey>) {
        let mut groups = BTreeSet::new();
        let mut links = BTreeSet::new();
        for change in changes {
            match change {
                Change::Group(g) if sel.wants_group(g) => {
                    groups.insert(g.clone());
                }
                Change::Link(key) if sel.wants_group(&key.0) && sel.wants_rel(key.1) => {
                    groups.insert(key.0.clone());
                    links.insert(key.clone());
                }
                _ => {}
            }
        }
        (groups, links)
    }
}
