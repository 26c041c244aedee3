//! A ticket's options beyond query and counts, checked when the ticket is made: roles
//! (a composition of one string property), teams, widening (a fallback query) and
//! expiry.
//!
//! Validation happens here, once, so a pass never meets an impossible ticket: a
//! composition must fit the ticket's counts exactly (teams × its total is a size the
//! ticket accepts), a party's values must list one known value per member, and a party
//! must fit in one team.

use std::collections::BTreeMap;

use quicmatch_protocol::{
    MAX_COMPOSITION_VALUES, MAX_PROPERTY_KEY_LEN, MAX_TEAMS, MAX_TICKET_PASSES,
};

use super::{PoolError, TicketSpec};
use crate::matchmaker::query::Query;

/// The exact count of each value of one string property a team must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositionRule {
    /// The string property (for a party, one value per member, comma-separated).
    pub property: String,
    /// Value -> exact count per team.
    pub counts: BTreeMap<String, usize>,
}

/// How many teams, and what to balance them on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRule {
    /// Teams, 2 to [`MAX_TEAMS`].
    pub count: usize,
    /// A numeric property whose team sums are balanced.
    pub balance: Option<String>,
}

/// What a ticket may ask for besides its query and counts.
#[derive(Debug, Clone, Default)]
pub struct TicketOptions {
    /// Roles per team (per group without teams).
    pub composition: Option<CompositionRule>,
    /// Teams.
    pub teams: Option<TeamRule>,
    /// A query that replaces the ticket's after this many passes.
    pub fallback: Option<(Query, u32)>,
    /// Passes after which an unmatched ticket is cancelled.
    pub expires_after: Option<u32>,
}

/// A ticket's roles-and-teams rule; only tickets with equal shapes group together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The composition per team, values in order.
    pub composition: Option<(String, Vec<(String, usize)>)>,
    /// Teams in a group (1: no teams, a composition for the whole group).
    pub teams: usize,
    /// The numeric property balanced across teams.
    pub balance: Option<String>,
}

impl Shape {
    /// What one team needs, per dimension: each value's count, or (without a
    /// composition) `team_size` players.
    pub(super) fn per_team(&self, team_size: usize) -> Vec<usize> {
        match &self.composition {
            Some((_, values)) => values.iter().map(|(_, n)| *n).collect(),
            None => vec![team_size],
        }
    }
}

fn invalid<T>(message: String) -> Result<T, PoolError> {
    Err(PoolError::Invalid(message))
}

fn check_passes(name: &str, n: u32) -> Result<(), PoolError> {
    if n == 0 || n > MAX_TICKET_PASSES {
        return invalid(format!("{name} must be 1 to {MAX_TICKET_PASSES} passes"));
    }
    Ok(())
}

impl TicketSpec {
    /// Whether a group of `size` suits this ticket's counts, teams and composition (the
    /// wait for its ideal size aside).
    pub(super) fn valid_size(&self, size: usize) -> bool {
        self.min_count <= size
            && size <= self.max_count
            && size.is_multiple_of(self.count_multiple)
            && match &self.shape {
                None => true,
                Some(shape) => {
                    size.is_multiple_of(shape.teams)
                        && shape.composition.as_ref().is_none_or(|(_, values)| {
                            size == shape.teams * values.iter().map(|(_, n)| n).sum::<usize>()
                        })
                }
            }
    }

    /// Adds options, checking them against the ticket's counts, properties and members.
    pub fn with_options(mut self, options: TicketOptions) -> Result<Self, PoolError> {
        if self.backfill.is_some() {
            return invalid("a backfill ticket takes no options".into());
        }
        if let Some((_, after)) = &options.fallback {
            check_passes("fallback_after", *after)?;
        }
        if let Some(n) = options.expires_after {
            check_passes("expires_after", n)?;
        }
        self.fallback = options.fallback;
        self.expires_after = options.expires_after;
        if options.composition.is_none() && options.teams.is_none() {
            return Ok(self);
        }
        let teams = match &options.teams {
            None => 1,
            Some(t) => {
                let max = usize::try_from(MAX_TEAMS).unwrap_or(usize::MAX);
                if t.count < 2 || t.count > max {
                    return invalid(format!("teams must be 2 to {MAX_TEAMS}"));
                }
                if let Some(b) = &t.balance {
                    if b.is_empty() || b.len() > MAX_PROPERTY_KEY_LEN {
                        return invalid(format!(
                            "the balance property must be 1 to {MAX_PROPERTY_KEY_LEN} bytes"
                        ));
                    }
                }
                t.count
            }
        };
        let composition = match options.composition {
            None => None,
            Some(c) => Some(self.roles_for(c)?),
        };
        self.shape = Some(Shape {
            composition,
            teams,
            balance: options.teams.and_then(|t| t.balance),
        });
        let Some(ideal) = (self.min_count..=self.max_count)
            .rev()
            .find(|size| self.valid_size(*size))
        else {
            let what = match &self.shape {
                Some(Shape {
                    composition: Some((_, values)),
                    ..
                }) => format!(
                    "the composition makes groups of {}",
                    teams * values.iter().map(|(_, n)| n).sum::<usize>()
                ),
                _ => format!("no group size is a multiple of {teams} teams"),
            };
            return invalid(format!(
                "{what}, which min_count {}, max_count {} and count_multiple {} do not allow",
                self.min_count, self.max_count, self.count_multiple
            ));
        };
        if self.members.len() > ideal / teams {
            return invalid(format!(
                "a party of {} does not fit in a team of {}",
                self.members.len(),
                ideal / teams
            ));
        }
        self.ideal = ideal;
        Ok(self)
    }

    /// Checks a composition and counts this ticket's members per value.
    fn roles_for(
        &mut self,
        c: CompositionRule,
    ) -> Result<(String, Vec<(String, usize)>), PoolError> {
        if c.property.is_empty() || c.property.len() > MAX_PROPERTY_KEY_LEN {
            return invalid(format!(
                "the composition property must be 1 to {MAX_PROPERTY_KEY_LEN} bytes"
            ));
        }
        if c.counts.is_empty() || c.counts.len() > MAX_COMPOSITION_VALUES {
            return invalid(format!(
                "a composition counts 1 to {MAX_COMPOSITION_VALUES} values"
            ));
        }
        if c.counts.values().sum::<usize>() == 0 || c.counts.values().any(|n| *n > self.max_count) {
            return invalid("composition counts must be at most max_count and not all 0".into());
        }
        let values: Vec<(String, usize)> = c.counts.into_iter().collect();
        let Some(held) = self.properties.strings.get(&c.property) else {
            return invalid(format!(
                "the composition needs the string property {:?} (one value per member)",
                c.property
            ));
        };
        let mut roles = vec![0usize; values.len()];
        let listed: Vec<&str> = held.split(',').map(str::trim).collect();
        if listed.len() != self.members.len() {
            return invalid(format!(
                "property {:?} lists {} values for {} members",
                c.property,
                listed.len(),
                self.members.len()
            ));
        }
        for v in listed {
            let Some(i) = values.iter().position(|(name, _)| name == v) else {
                return invalid(format!(
                    "value {v:?} of property {:?} is not in the composition",
                    c.property
                ));
            };
            roles[i] += 1;
            if roles[i] > values[i].1 {
                return invalid(format!(
                    "the ticket holds more {v:?} than one team takes ({})",
                    values[i].1
                ));
            }
        }
        self.roles = roles;
        Ok((c.property, values))
    }
}
