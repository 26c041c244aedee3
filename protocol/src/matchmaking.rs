//! Matchmaker ticket options beyond the query and counts: roles (composition), teams,
//! widening, expiry; and the matched event that carries team assignments.
//!
//! These travel in [`crate::Request::MatchmakerAddWith`] and
//! [`crate::Request::PartyMatchmakerAddWith`]; a ticket that asks for teams is answered
//! with [`crate::Event::MatchmakerMatchedTeams`] instead of
//! [`crate::Event::MatchmakerMatched`]. Like every wire type, fields are encoded in
//! order, so these structs never gain fields: a later version adds a new request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::MatchmakerMatched;

/// Options of one matchmaker ticket; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchmakerOptions {
    /// The exact count of each value of one string property a group (or, with teams,
    /// each team) must hold, e.g. `role`: tank 1, healer 1, dps 3.
    pub composition: Option<Composition>,
    /// Split the group into this many teams, parties never split.
    pub teams: Option<Teams>,
    /// A query that replaces the ticket's own once it has waited `fallback_after`
    /// passes (widening).
    pub fallback_query: Option<String>,
    /// Passes before `fallback_query` applies (at least 1; ignored without it).
    pub fallback_after: u32,
    /// Passes after which an unmatched ticket is cancelled with the reason `"expired"`.
    pub expires_after: Option<u32>,
}

/// Exact counts of the values of one string property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composition {
    /// The string property that holds each member's value. A party ticket lists one
    /// value per member, comma-separated (`"tank,dps"`).
    pub property: String,
    /// Value -> exact count, at most [`crate::MAX_COMPOSITION_VALUES`] values.
    pub counts: BTreeMap<String, u32>,
}

/// How a group is split into teams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teams {
    /// Number of teams, 2 to [`crate::MAX_TEAMS`]; the group size must be a multiple.
    pub count: u32,
    /// A numeric property whose team sums are balanced (smallest spread).
    pub balance_property: Option<String>,
}

/// A matchmaker result with team assignments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchmakerMatchedTeams {
    /// The result, as [`crate::Event::MatchmakerMatched`] carries it.
    pub matched: MatchmakerMatched,
    /// The team (0-based) of each user, in the order of `matched.users`.
    pub teams: Vec<u32>,
}
