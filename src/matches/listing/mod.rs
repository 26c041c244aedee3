//! The match-listing index: every live match's kind, label, size and privacy, with its
//! label already parsed into query fields, so that a listing is a scan that only
//! evaluates filters. This module owns how a label reads as query fields and the
//! filter and order rules of a listing; the match table keeps the index up to date
//! under its own lock and answers listings from it.
//!
//! # Listing
//!
//! [`ListingIndex::list`] first checks the request, in this order, and rejects it with
//! `BAD_INPUT` naming the problem:
//! - `limit` must be 1 to [`MAX_LIST_LIMIT`] (100).
//! - `min_size` greater than `max_size` is rejected.
//! - `query` must be at most [`MAX_QUERY_LEN`] (1024) bytes and must parse; a query
//!   that does not is rejected with the byte position and the reason, as the
//!   matchmaker reports its query errors (`query error at byte N: reason`).
//!
//! It lists every match that is not private and passes every filter the request gives,
//! full or not. Private matches are never listed.
//! - `authoritative`: only authoritative (`true`) or only relayed (`false`) matches.
//! - `min_size` / `max_size`: the current size is at least / at most this (inclusive).
//! - `label`: the whole label is exactly this (case-sensitive; a match without a label
//!   never passes).
//! - `query`: the matchmaker's query language over the label's fields (below); an
//!   empty query or `*` passes every match.
//!
//! The order is deterministic:
//! 1. by query score, highest first, when a query is given (equal scores, and every
//!    match when there is no query, compare equal);
//! 2. then matches that are not full (`size < max_size`) before full ones;
//! 3. then fuller first (larger size);
//! 4. then newest first (most recently created; replacing a match's entry with
//!    [`ListingIndex::upsert`] keeps its age);
//! 5. then match id ascending (creation order is unique, so this only makes the order
//!    total).
//!
//! The first `limit` matches in that order are returned.
//!
//! # Labels as query fields
//!
//! A listing query is written like a matchmaker query, but its fields are
//! `label.<key>` instead of `properties.<key>`, plus the bare field `label`
//! ([`Fields::Label`]):
//! - A label that is a JSON object is flattened. Nested object keys are joined with
//!   dots (`{"a":{"b":1}}` is `label.a.b` = 1). JSON strings are string fields,
//!   numbers numeric fields, booleans the strings `"true"` and `"false"`, and null is
//!   absent.
//! - Arrays: query fields hold one value per key, so array elements are indexed by
//!   position, each element being the field `<key>.<index>`: `{"tags":["eu","duo"]}`
//!   is `label.tags.0` = `"eu"` and `label.tags.1` = `"duo"`, and `label.tags:eu`
//!   matches nothing. Objects and arrays inside arrays continue the path
//!   (`{"a":[{"b":1}]}` is `label.a.0.b` = 1).
//! - When two paths flatten to the same key (`{"a.b":1,"a":{"b":2}}`), one value is
//!   kept, the same one every time for the same label. A string, number or boolean
//!   under the empty top-level key (`{"":1}`) cannot be named and is dropped.
//! - A label that is not a JSON object (plain text, a JSON string, number, boolean or
//!   array, or text that does not parse) is the single field `label`, its whole raw
//!   text: `label:casual`, `+label:"eu west"`, `label:eu*`. The bare field `label`
//!   exists only for such labels, and `label.<key>` fields only for JSON objects.
//! - A match without a label has no fields (`*` and purely excluding queries still
//!   pass it).
//!
//! Each label is parsed into its fields once, when its entry is inserted or its label
//! changes, never per listing. A listing evaluates only the stored fields, collects the
//! matches that pass, selects the first `limit` of them and sorts only those.

use std::{cmp::Ordering, collections::HashMap, fmt::Write as _, sync::Arc, time::Instant};

use quicmatch_protocol::{
    envelope::{MatchListRequest, MatchListing},
    ErrorCode, MatchId, MAX_LIST_LIMIT,
};
use serde_json::Value;

use crate::{
    handlers::ApiError,
    matchmaker::query::{Fields, Properties, Query, LABEL_KEY, MAX_QUERY_LEN},
};

/// One match as listings see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListEntry {
    /// The match.
    pub(crate) match_id: MatchId,
    /// Whether server code runs it.
    pub(crate) authoritative: bool,
    /// Its label, if any.
    pub(crate) label: Option<String>,
    /// Members now.
    pub(crate) size: u32,
    /// Most members.
    pub(crate) max_size: u32,
    /// Ticks per second (0 for relayed matches).
    pub(crate) tick_rate: u32,
    /// The registered handler's name (empty for relayed matches).
    pub(crate) handler: Arc<str>,
    /// Never listed when set.
    pub(crate) private: bool,
}

impl ListEntry {
    fn is_full(&self) -> bool {
        self.size >= self.max_size
    }

    fn listing(&self) -> MatchListing {
        MatchListing {
            match_id: self.match_id,
            authoritative: self.authoritative,
            label: self.label.clone(),
            size: self.size,
            max_size: self.max_size,
            tick_rate: self.tick_rate,
            handler: self.handler.to_string(),
        }
    }
}

/// An entry with its label's query fields and its age.
#[derive(Debug)]
struct Indexed {
    entry: ListEntry,
    fields: Properties,
    /// Creation order: larger is newer; unique.
    created: u64,
    /// When it was created: what orders it among other nodes' matches.
    born: Instant,
}

/// Every live match, ready to list (see the module documentation for the rules).
#[derive(Debug, Default)]
pub(crate) struct ListingIndex {
    /// Scanned by listings; unordered (removal swaps the last entry in).
    entries: Vec<Indexed>,
    /// Where each match sits in `entries`.
    positions: HashMap<MatchId, usize>,
    /// The `created` value of the next new match.
    next_created: u64,
}

impl ListingIndex {
    /// Inserts a new match as the newest so far, or replaces an existing match's entry,
    /// keeping its age.
    pub(crate) fn upsert(&mut self, entry: ListEntry) {
        if let Some(slot) = self.slot_mut(entry.match_id) {
            if slot.entry.label != entry.label {
                slot.fields = label_fields(entry.label.as_deref());
            }
            slot.entry = entry;
            return;
        }
        let created = self.next_created;
        self.next_created += 1;
        self.positions.insert(entry.match_id, self.entries.len());
        self.entries.push(Indexed {
            fields: label_fields(entry.label.as_deref()),
            entry,
            created,
            born: Instant::now(),
        });
    }

    /// Changes a match's label; the very next [`list`](Self::list) sees it. Unknown
    /// matches are ignored.
    pub(crate) fn set_label(&mut self, id: MatchId, label: Option<String>) {
        if let Some(slot) = self.slot_mut(id) {
            if slot.entry.label != label {
                slot.fields = label_fields(label.as_deref());
                slot.entry.label = label;
            }
        }
    }

    /// Changes a match's current size. Unknown matches are ignored.
    pub(crate) fn set_size(&mut self, id: MatchId, size: u32) {
        if let Some(slot) = self.slot_mut(id) {
            slot.entry.size = size;
        }
    }

    /// Forgets a match. Unknown matches are ignored.
    pub(crate) fn remove(&mut self, id: MatchId) {
        let Some(pos) = self.positions.remove(&id) else {
            return;
        };
        if pos >= self.entries.len() {
            return;
        }
        self.entries.swap_remove(pos);
        if let Some(moved) = self.entries.get(pos) {
            self.positions.insert(moved.entry.match_id, pos);
        }
    }

    /// How many matches the index holds, private ones included.
    // Not read by the server yet.
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The listing `req` asks for, in the documented order; `BAD_INPUT` when the
    /// request is invalid.
    pub(crate) fn list(&self, req: &MatchListRequest) -> Result<Vec<MatchListing>, ApiError> {
        Ok(self
            .list_ranked(req, Instant::now())?
            .into_iter()
            .map(|r| r.listing)
            .collect())
    }

    /// [`list`](Self::list) with what ranks each listing, so listings of several nodes
    /// merge in the same order ([`merge`]).
    pub(crate) fn list_ranked(
        &self,
        req: &MatchListRequest,
        now: Instant,
    ) -> Result<Vec<Ranked>, ApiError> {
        if req.limit == 0 || req.limit > MAX_LIST_LIMIT {
            return Err(bad(format!(
                "limit must be 1 to {MAX_LIST_LIMIT}, got {}",
                req.limit
            )));
        }
        if let (Some(min), Some(max)) = (req.min_size, req.max_size) {
            if min > max {
                return Err(bad(format!(
                    "min_size {min} is greater than max_size {max}"
                )));
            }
        }
        let query = match req.query.as_deref() {
            None => None,
            Some(q) if q.len() > MAX_QUERY_LEN => {
                return Err(bad(format!("query longer than {MAX_QUERY_LEN} bytes")));
            }
            Some(q) => Some(Query::parse_fields(q, Fields::Label).map_err(|e| bad(e.to_string()))?),
        };
        let label = req.label.as_deref();
        let mut hits = Vec::new();
        for slot in &self.entries {
            let e = &slot.entry;
            if e.private
                || req.authoritative.is_some_and(|a| a != e.authoritative)
                || req.min_size.is_some_and(|min| e.size < min)
                || req.max_size.is_some_and(|max| e.size > max)
                || label.is_some_and(|l| e.label.as_deref() != Some(l))
            {
                continue;
            }
            let score = match &query {
                None => 0.0,
                Some(q) => match q.score(&slot.fields) {
                    Some(s) => rank_score(s),
                    None => continue,
                },
            };
            hits.push(Hit { score, slot });
        }
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, Hit::order);
            hits.truncate(limit);
        }
        hits.sort_unstable_by(Hit::order);
        Ok(hits
            .iter()
            .map(|h| Ranked {
                listing: h.slot.entry.listing(),
                score: h.score,
                age_ns: u64::try_from(now.saturating_duration_since(h.slot.born).as_nanos())
                    .unwrap_or(u64::MAX),
                created: h.slot.created,
            })
            .collect())
    }

    fn slot_mut(&mut self, id: MatchId) -> Option<&mut Indexed> {
        let pos = *self.positions.get(&id)?;
        self.entries.get_mut(pos)
    }
}

/// A listing with what orders it: its query score and its age.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ranked {
    pub(crate) listing: MatchListing,
    pub(crate) score: f64,
    /// Nanoseconds since the match was created (newer first).
    pub(crate) age_ns: u64,
    /// Its node's creation order (larger is newer): what orders two matches of one
    /// node created within the clock's resolution.
    pub(crate) created: u64,
}

impl Ranked {
    /// The documented listing order (as [`Hit::order`]): `Less` comes first.
    fn order(a: &Self, b: &Self) -> Ordering {
        let full = |r: &Self| r.listing.size >= r.listing.max_size;
        b.score
            .total_cmp(&a.score)
            .then_with(|| full(a).cmp(&full(b)))
            .then_with(|| b.listing.size.cmp(&a.listing.size))
            .then_with(|| a.age_ns.cmp(&b.age_ns))
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| a.listing.match_id.cmp(&b.listing.match_id))
    }
}

/// Several nodes' listings (each in the listing order) as one: the first `limit` in
/// the same order.
pub(crate) fn merge(lists: Vec<Vec<Ranked>>, limit: usize) -> Vec<MatchListing> {
    let mut all: Vec<Ranked> = lists.into_iter().flatten().collect();
    all.sort_by(Ranked::order);
    all.truncate(limit);
    all.into_iter().map(|r| r.listing).collect()
}

/// A match that passed a listing's filters.
struct Hit<'a> {
    score: f64,
    slot: &'a Indexed,
}

impl Hit<'_> {
    /// The documented listing order: `Less` comes first.
    fn order(a: &Self, b: &Self) -> Ordering {
        let (x, y) = (&a.slot.entry, &b.slot.entry);
        b.score
            .total_cmp(&a.score)
            .then_with(|| x.is_full().cmp(&y.is_full()))
            .then_with(|| y.size.cmp(&x.size))
            .then_with(|| b.slot.created.cmp(&a.slot.created))
            .then_with(|| x.match_id.cmp(&y.match_id))
    }
}

/// A score as the order compares it: `-0` is `0`, so equal scores compare equal under
/// `total_cmp`, and NaN (only reachable through absurd boosts) counts as 0.
fn rank_score(s: f64) -> f64 {
    if s.is_nan() {
        0.0
    } else {
        s + 0.0
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BAD_INPUT, message)
}

/// A label as query fields (see the module documentation).
fn label_fields(label: Option<&str>) -> Properties {
    let mut fields = Properties::default();
    let Some(label) = label else {
        return fields;
    };
    match serde_json::from_str::<Value>(label) {
        Ok(value @ Value::Object(_)) => flatten(&value, &mut String::new(), true, &mut fields),
        _ => {
            fields
                .strings
                .insert(LABEL_KEY.to_owned(), label.to_owned());
        }
    }
    fields
}

/// Adds `value`, found at the dotted `path` (`top`: the label itself, path empty), to
/// `fields`. `path` is restored before returning. Depth is bounded by the JSON parser's
/// recursion limit.
fn flatten(value: &Value, path: &mut String, top: bool, fields: &mut Properties) {
    match value {
        Value::Null => {}
        // A scalar under the top-level empty key: no `label.<key>` term can name it, and
        // the bare `label` field (the empty key too) must not see it.
        Value::Bool(_) | Value::Number(_) | Value::String(_) if path.is_empty() => {}
        Value::Bool(b) => {
            let text = if *b { "true" } else { "false" };
            fields
                .strings
                .entry(path.clone())
                .or_insert_with(|| text.to_owned());
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                fields.numbers.entry(path.clone()).or_insert(x);
            }
        }
        Value::String(s) => {
            fields
                .strings
                .entry(path.clone())
                .or_insert_with(|| s.clone());
        }
        Value::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, ".{i}");
                flatten(item, path, false, fields);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let len = path.len();
            for (key, item) in map {
                if !top {
                    path.push('.');
                }
                path.push_str(key);
                flatten(item, path, false, fields);
                path.truncate(len);
            }
        }
    }
}

#[cfg(test)]
mod tests;
