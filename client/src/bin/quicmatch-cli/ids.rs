//! The ids this run has seen (in replies and events), so that a command takes a unique
//! prefix of one instead of all 36 characters.

use std::{
    collections::BTreeSet,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
};

use quicmatch_client::{Event, Match, MatchListing, PartyInfo, Presence};
use uuid::Uuid;

/// The shortest prefix taken, in hex digits (hyphens do not count).
pub(crate) const MIN_PREFIX: usize = 4;

/// Which kind of id a command expects: prefixes only match ids of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Match,
    Party,
    Session,
    Ticket,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Match, Self::Party, Self::Session, Self::Ticket];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Match => "match id",
            Self::Party => "party id",
            Self::Session => "session id",
            Self::Ticket => "ticket id",
        })
    }
}

/// Every id seen so far, by kind; shared by the command loop and the event printer.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<[BTreeSet<Uuid>; Kind::ALL.len()]>>);

impl Seen {
    /// Remembers `id` as an id of `kind` (the nil id, which stands for "nobody", is not).
    pub(crate) fn add(&self, kind: Kind, id: impl Into<Uuid>) {
        let id = id.into();
        if !id.is_nil() {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)[kind.index()].insert(id);
        }
    }

    pub(crate) fn presences<'a>(&self, presences: impl IntoIterator<Item = &'a Presence>) {
        for p in presences {
            self.add(Kind::Session, p.session_id.0);
        }
    }

    pub(crate) fn match_reply(&self, m: &Match) {
        self.add(Kind::Match, m.match_id.0);
        self.presences(&m.presences);
        self.presences([&m.self_presence]);
    }

    pub(crate) fn listing(&self, matches: &[MatchListing]) {
        for m in matches {
            self.add(Kind::Match, m.match_id.0);
        }
    }

    pub(crate) fn party(&self, p: &PartyInfo) {
        self.add(Kind::Party, p.party_id.0);
        self.presences(&p.presences);
        self.presences([&p.leader, &p.self_presence]);
    }

    /// Remembers the ids an event carries.
    pub(crate) fn event(&self, event: &Event) {
        match event {
            Event::MatchPresence(p) => {
                self.add(Kind::Match, p.match_id.0);
                self.presences(p.joins.iter().chain(&p.leaves));
            }
            Event::MatchData(d) => {
                self.add(Kind::Match, d.match_id.0);
                self.presences([&d.sender]);
            }
            Event::MatchmakerMatched(m)
            | Event::MatchmakerMatchedTeams(quicmatch_client::MatchmakerMatchedTeams {
                matched: m,
                ..
            }) => {
                self.add(Kind::Ticket, m.ticket.0);
                if let Some(id) = m.match_id {
                    self.add(Kind::Match, id.0);
                }
                for user in m.users.iter().chain([&m.self_user]) {
                    self.presences([&user.presence]);
                    if let Some(party) = user.party_id {
                        self.add(Kind::Party, party.0);
                    }
                }
            }
            Event::MatchmakerTicketCancelled { ticket, .. } => self.add(Kind::Ticket, ticket.0),
            Event::Party(p) => self.party(p),
            Event::PartyPresence {
                party_id,
                joins,
                leaves,
            } => {
                self.add(Kind::Party, party_id.0);
                self.presences(joins.iter().chain(leaves));
            }
            Event::PartyLeader { party_id, presence } => {
                self.add(Kind::Party, party_id.0);
                self.presences([presence]);
            }
            Event::PartyJoinRequest {
                party_id,
                presences,
            } => {
                self.add(Kind::Party, party_id.0);
                self.presences(presences);
            }
            Event::PartyData {
                party_id, sender, ..
            } => {
                self.add(Kind::Party, party_id.0);
                self.presences([sender]);
            }
            Event::PartyMatchmakerTicket { party_id, ticket } => {
                self.add(Kind::Party, party_id.0);
                self.add(Kind::Ticket, ticket.0);
            }
            Event::PartyClose { party_id, .. } | Event::PartyUpdate { party_id, .. } => {
                self.add(Kind::Party, party_id.0);
            }
            Event::MatchEnded { match_id, .. } => self.add(Kind::Match, match_id.0),
            _ => {}
        }
    }

    /// Parses a full id of `kind`, or else takes `s` as a prefix (at least
    /// [`MIN_PREFIX`] hex digits, hyphens optional) of exactly one id of that kind seen
    /// so far. An unknown prefix gives the full id's parse error; an ambiguous one lists
    /// the candidates.
    pub(crate) fn resolve<T>(&self, kind: Kind, s: &str) -> Result<T, String>
    where
        T: FromStr + From<Uuid>,
        T::Err: fmt::Display,
    {
        let parse_error = match s.parse::<T>() {
            Ok(id) => return Ok(id),
            Err(e) => e.to_string(),
        };
        let digits = s.trim().replace('-', "").to_ascii_lowercase();
        if digits.len() < MIN_PREFIX || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(parse_error);
        }
        let candidates: Vec<Uuid> = self.0.lock().unwrap_or_else(PoisonError::into_inner)
            [kind.index()]
        .iter()
        .filter(|id| id.simple().to_string().starts_with(&digits))
        .copied()
        .collect();
        match candidates[..] {
            [] => Err(parse_error),
            [id] => Ok(T::from(id)),
            _ => Err(format!(
                "ambiguous {kind} prefix {:?}: could be {}",
                s.trim(),
                candidates
                    .iter()
                    .map(|id| id.hyphenated().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use quicmatch_client::{MatchId, PartyId, SessionId};

    use super::*;

    fn id(s: &str) -> Uuid {
        s.parse().expect("uuid")
    }

    #[test]
    fn prefixes_resolve_to_one_seen_id_of_the_kind() {
        let seen = Seen::default();
        let a = id("1234abcd-0000-4000-8000-000000000001");
        let b = id("1234abff-0000-4000-8000-000000000002");
        let c = id("98765432-1000-4000-8000-000000000003");
        seen.add(Kind::Match, a);
        seen.add(Kind::Match, b);
        seen.add(Kind::Party, c);

        let full: MatchId = seen
            .resolve(Kind::Match, &c.to_string())
            .expect("full ids of any kind parse as before");
        assert_eq!(full.0, c);
        for prefix in [
            "1234abc",
            "1234ABCD",
            "1234-abcd",
            "1234abcd-0",
            " 1234abcd ",
        ] {
            let m: MatchId = seen.resolve(Kind::Match, prefix).expect(prefix);
            assert_eq!(m.0, a, "{prefix}");
        }
        let p: PartyId = seen.resolve(Kind::Party, "9876").expect("party prefix");
        assert_eq!(p.0, c);
        let simple: PartyId = seen
            .resolve(Kind::Party, &c.simple().to_string())
            .expect("simple form");
        assert_eq!(simple.0, c);

        let err = seen
            .resolve::<MatchId>(Kind::Match, "1234ab")
            .expect_err("ambiguous");
        assert!(
            err.starts_with("ambiguous match id prefix \"1234ab\""),
            "{err}"
        );
        assert!(
            err.contains(&a.to_string()) && err.contains(&b.to_string()),
            "{err}"
        );

        // Unknown, too short, of another kind, or not hex: the usual parse error.
        for bad in ["9876abcd", "123", "12-3", "1234abg", "", "98765432-1"] {
            let err = seen.resolve::<MatchId>(Kind::Match, bad).expect_err(bad);
            assert!(err.starts_with("invalid match id"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_nil_id_is_never_a_candidate() {
        let seen = Seen::default();
        seen.add(Kind::Session, Uuid::nil());
        assert!(seen.resolve::<SessionId>(Kind::Session, "0000").is_err());
    }
}
