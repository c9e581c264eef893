//! Query-string decoding and the small OData grammar delta accepts.
//!
//! Clients encode query strings differently (reqwest's `.query()` writes `%24select` and `+`
//! for spaces, a saved nextLink keeps a raw `$`), so every option is matched after decoding,
//! case-insensitively and with or without the leading `$`, as Graph does.

use std::collections::BTreeSet;

use super::state::Selection;

/// Graph's limit on `id eq '…'` clauses in one delta `$filter`.
pub(super) const MAX_FILTER_IDS: usize = 50;

/// Decoded `(name, value)` pairs of a raw query string, in order.
pub(super) fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    let raw = raw.unwrap_or("");
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The decoded query joined back into `k=v&k=v`, for request records.
pub(super) fn decoded(raw: Option<&str>) -> String {
    let pairs = pairs(raw);
    let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join("&")
}

/// The value of OData option `name` (given without `$`), if present.
pub(super) fn option<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.strip_prefix('$').unwrap_or(k).eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Percent-encodes a query value, leaving the characters Graph itself leaves raw.
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b',' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A delta request's shape as the client wrote it, kept so a 410 `Location` can repeat it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeltaQuery {
    pub raw_select: Option<String>,
    pub raw_filter: Option<String>,
    pub selection: Selection,
}

impl DeltaQuery {
    /// Parses `$select` and `$filter`, rejecting options delta does not support.
    pub fn parse(pairs: &[(String, String)]) -> Result<DeltaQuery, String> {
        for name in ["expand", "top", "orderby"] {
            if option(pairs, name).is_some() {
                return Err(format!(
                    "Unsupported Query: '${name}' is not supported on delta queries."
                ));
            }
        }
        let raw_select = option(pairs, "select").map(str::to_owned);
        let raw_filter = option(pairs, "filter")
            .filter(|f| !f.trim().is_empty())
            .map(str::to_owned);
        let ids = raw_filter.as_deref().map(parse_id_filter).transpose()?;
        let selection = match raw_select.as_deref() {
            // Graph's default projection includes members@delta (group-delta example 1).
            None => Selection {
                members: true,
                owners: false,
                display_name: true,
                ids,
            },
            Some(select) => {
                let has = |name: &str| {
                    select
                        .split(',')
                        .any(|s| s.trim().eq_ignore_ascii_case(name))
                };
                Selection {
                    members: has("members"),
                    owners: has("owners"),
                    display_name: has("displayName"),
                    ids,
                }
            }
        };
        Ok(DeltaQuery {
            raw_select,
            raw_filter,
            selection,
        })
    }

    /// The initial query with an empty `$deltatoken`, as sent in a 410 `Location`.
    pub fn restart_url(&self, base_url: &str) -> String {
        let mut url = format!("{base_url}/v1.0/groups/delta?");
        if let Some(select) = &self.raw_select {
            url.push_str(&format!("$select={}&", encode(select)));
        }
        if let Some(filter) = &self.raw_filter {
            url.push_str(&format!("$filter={}&", encode(filter)));
        }
        url.push_str("$deltatoken=");
        url
    }
}

/// Parses `id eq '<id>' or id eq '<id>' …`, the only filter group delta supports.
fn parse_id_filter(filter: &str) -> Result<BTreeSet<String>, String> {
    let unsupported = || {
        format!(
            "Unsupported query filter: '{filter}'. Only \"id eq '<id>'\" clauses joined by 'or' \
             are supported on groups/delta."
        )
    };
    let tokens: Vec<&str> = filter.split_whitespace().collect();
    let mut ids = Vec::new();
    for (i, clause) in tokens.chunks(4).enumerate() {
        let (field, op, value) = match clause {
            [f, o, v] | [f, o, v, _] => (*f, *o, *v),
            _ => return Err(unsupported()),
        };
        let joiner_ok = clause.get(3).is_none_or(|j| j.eq_ignore_ascii_case("or"));
        let quoted = value.len() >= 3 && value.starts_with('\'') && value.ends_with('\'');
        let ok = field.eq_ignore_ascii_case("id") && op.eq_ignore_ascii_case("eq");
        let last = (i + 1) * 4 >= tokens.len();
        if !(ok && quoted && joiner_ok) || (clause.len() == 4 && last) {
            return Err(unsupported());
        }
        ids.push(value[1..value.len() - 1].to_owned());
    }
    if ids.is_empty() {
        return Err(unsupported());
    }
    if ids.len() > MAX_FILTER_IDS {
        return Err(format!(
            "Too many ids in filter: {}. A maximum of {MAX_FILTER_IDS} ids is supported per \
             delta filter.",
            ids.len()
        ));
    }
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_or_joined_id_clauses() {
        let ids = parse_id_filter("id eq 'a' or ID eq 'b'").unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn rejects_other_filter_forms() {
        for bad in [
            "displayName eq 'x'",
            "id eq 'a' or",
            "id eq 'a' and id eq 'b'",
            "startswith(id,'a')",
            "id ne 'a'",
        ] {
            let err = parse_id_filter(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn accepts_encoded_dollar_and_plus_spaces() {
        let p = pairs(Some("%24select=members&%24filter=id+eq+%27g%27"));
        let q = DeltaQuery::parse(&p).unwrap();
        assert!(q.selection.members && !q.selection.owners);
        assert_eq!(q.raw_filter.as_deref(), Some("id eq 'g'"));
    }
}
