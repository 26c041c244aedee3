//! Memberships that cross nodes (docs/cluster.md §5.2), both sides, pure bookkeeping:
//!
//! - as a *home*: the remote matches local sessions are in, each under a local *alias*
//!   handle (top bit set, so a datagram's handle says at once whether its match is
//!   local), with the host node and the host's handle; and the sessions still joining
//!   one, whose events may come before the host's answer;
//! - as a *host*: the members of local matches homed on each other node, so the loss
//!   of that node removes them.

use std::collections::{HashMap, HashSet, VecDeque};

use quicmatch_protocol::{MatchId, SessionId};

use super::wire::Sender;

/// Set in every alias handle, never in a local one.
pub(crate) const ALIAS_BIT: u32 = 1 << 31;

/// A remote match local sessions are in.
#[derive(Debug)]
struct RemoteMatch {
    host: Sender,
    host_handle: u32,
    alias: u32,
    /// Each member with the attempt that made it one.
    members: HashMap<SessionId, u64>,
}

/// Where a remote match lives, as the home sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hosted {
    pub(super) host: Sender,
    pub(super) host_handle: u32,
    pub(super) alias: u32,
    /// The join attempt that made the session a member.
    pub(super) attempt: u64,
}

/// Tombstones kept per node (leaves that came before their join); past this they are
/// forgotten, oldest first.
const TOMBSTONES: usize = 4096;

/// What a host knows of the members homed on one other node.
#[derive(Debug, Default)]
struct Guests {
    /// Members of local matches, with the attempt their home numbered the join.
    members: HashMap<(MatchId, SessionId), u64>,
    /// Leaves that arrived before (or without) their join: a join of that attempt or
    /// an older one is refused.
    left: HashMap<(MatchId, SessionId), u64>,
    left_order: VecDeque<(MatchId, SessionId)>,
}

/// The cross-node memberships of one node. A home numbers every join attempt; a
/// `Leave` names the attempt it undoes, so a host that gets a join and a leave in the
/// other order (they travel by different subjects) still ends up where the home is.
#[derive(Debug, Default)]
pub(super) struct Memberships {
    remote: HashMap<MatchId, RemoteMatch>,
    aliases: HashMap<u32, MatchId>,
    next_alias: u32,
    next_attempt: u64,
    /// Sessions joining a match not found locally, host not known yet.
    joining: HashMap<MatchId, HashMap<SessionId, u64>>,
    /// Join attempts a host ended before its `Joined` answer was taken, and whether the
    /// session was told (`MatchEnded` delivered): then the answer stands but makes no
    /// member; otherwise it counts as a refusal.
    ended_joining: HashMap<(MatchId, SessionId, u64), bool>,
    /// Members of local matches homed on each other node.
    guests: HashMap<String, Guests>,
}

impl Memberships {
    /// `session` starts joining `match_id` somewhere else; returns the attempt's number.
    pub(super) fn joining(&mut self, match_id: MatchId, session: SessionId) -> u64 {
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        self.joining
            .entry(match_id)
            .or_default()
            .insert(session, attempt);
        attempt
    }

    /// Whether the host ended join `attempt` before its answer came, and whether the
    /// session was told so; forgets it.
    pub(super) fn take_ended_joining(
        &mut self,
        match_id: MatchId,
        session: SessionId,
        attempt: u64,
    ) -> Option<bool> {
        self.ended_joining.remove(&(match_id, session, attempt))
    }

    /// The session, still joining `match_id`, was told the match ended (its host
    /// kicked it, or the match ended, before the join's answer came): returns the
    /// attempt, whose answer will make no member.
    pub(super) fn told_ended_while_joining(
        &mut self,
        match_id: MatchId,
        session: SessionId,
    ) -> Option<u64> {
        let attempt = *self.joining.get(&match_id)?.get(&session)?;
        self.ended_joining
            .insert((match_id, session, attempt), true);
        Some(attempt)
    }

    /// The join attempt ended without success.
    pub(super) fn not_joined(&mut self, match_id: MatchId, session: SessionId, attempt: u64) {
        self.ended_joining.remove(&(match_id, session, attempt));
        if let Some(set) = self.joining.get_mut(&match_id) {
            if set.get(&session) == Some(&attempt) {
                set.remove(&session);
            }
            if set.is_empty() {
                self.joining.remove(&match_id);
            }
        }
    }

    /// `session` joined `match_id` on `host` by `attempt`; returns the alias its client
    /// is given.
    pub(super) fn joined(
        &mut self,
        match_id: MatchId,
        session: SessionId,
        host: &Sender,
        host_handle: u32,
        attempt: u64,
    ) -> u32 {
        self.not_joined(match_id, session, attempt);
        if let Some(m) = self.remote.get_mut(&match_id) {
            if m.host == *host {
                m.host_handle = host_handle;
                m.members.insert(session, attempt);
                return m.alias;
            }
            // The match's host changed incarnation (the old one is gone): start anew.
            let alias = m.alias;
            self.remote.remove(&match_id);
            self.aliases.remove(&alias);
        }
        let alias = self.new_alias();
        self.aliases.insert(alias, match_id);
        self.remote.insert(
            match_id,
            RemoteMatch {
                host: host.clone(),
                host_handle,
                alias,
                members: HashMap::from([(session, attempt)]),
            },
        );
        alias
    }

    fn new_alias(&mut self) -> u32 {
        loop {
            self.next_alias = self.next_alias.wrapping_add(1) & !ALIAS_BIT;
            let alias = ALIAS_BIT | self.next_alias;
            if !self.aliases.contains_key(&alias) {
                return alias;
            }
        }
    }

    /// Where `session`'s remote match `match_id` lives, if it is a member.
    pub(super) fn host_of(&self, match_id: MatchId, session: SessionId) -> Option<Hosted> {
        let m = self.remote.get(&match_id)?;
        let attempt = *m.members.get(&session)?;
        Some(Hosted {
            host: m.host.clone(),
            host_handle: m.host_handle,
            alias: m.alias,
            attempt,
        })
    }

    /// The remote match an alias names, and where it lives, if `session` is a member.
    pub(super) fn by_alias(&self, alias: u32, session: SessionId) -> Option<(MatchId, Hosted)> {
        let id = *self.aliases.get(&alias)?;
        self.host_of(id, session).map(|h| (id, h))
    }

    /// The alias of a remote match hosted by `host`.
    pub(super) fn alias(&self, match_id: MatchId, host: &Sender) -> Option<u32> {
        self.remote
            .get(&match_id)
            .filter(|m| m.host == *host)
            .map(|m| m.alias)
    }

    /// Whether what `host` sends for `match_id` may go to `session`: a member there, or
    /// joining it.
    pub(super) fn in_scope(&self, host: &Sender, match_id: MatchId, session: SessionId) -> bool {
        self.remote
            .get(&match_id)
            .is_some_and(|m| m.host == *host && m.members.contains_key(&session))
            || self
                .joining
                .get(&match_id)
                .is_some_and(|s| s.contains_key(&session))
    }

    /// `session` left remote match `match_id`; returns its host and the attempt that
    /// made it a member, if it was one.
    pub(super) fn left(&mut self, match_id: MatchId, session: SessionId) -> Option<(Sender, u64)> {
        let m = self.remote.get_mut(&match_id)?;
        let attempt = m.members.remove(&session)?;
        let host = m.host.clone();
        if m.members.is_empty() {
            let alias = m.alias;
            self.remote.remove(&match_id);
            self.aliases.remove(&alias);
        }
        Some((host, attempt))
    }

    /// The host ended `session`'s membership in `match_id` made by `attempt`; whether
    /// it was one. An attempt still waiting for its answer is marked: the answer will
    /// not count.
    pub(super) fn ended_by(
        &mut self,
        host: &Sender,
        match_id: MatchId,
        session: SessionId,
        attempt: u64,
    ) -> bool {
        let hosted_there = self
            .remote
            .get(&match_id)
            .is_some_and(|m| m.host == *host && m.members.get(&session) == Some(&attempt));
        if hosted_there {
            return self.left(match_id, session).is_some();
        }
        if self
            .joining
            .get(&match_id)
            .is_some_and(|j| j.get(&session) == Some(&attempt))
        {
            self.ended_joining
                .insert((match_id, session, attempt), false);
        }
        false
    }

    /// Every membership of local sessions in matches hosted by `node`, now ended, with
    /// the attempts that made them.
    pub(super) fn drop_host(&mut self, node: &str) -> Vec<(MatchId, SessionId, u64)> {
        let gone: Vec<MatchId> = self
            .remote
            .iter()
            .filter(|(_, m)| m.host.node == node)
            .map(|(id, _)| *id)
            .collect();
        let mut ended = Vec::new();
        for id in gone {
            if let Some(m) = self.remote.remove(&id) {
                self.aliases.remove(&m.alias);
                ended.extend(m.members.into_iter().map(|(s, a)| (id, s, a)));
            }
        }
        ended
    }

    /// A member homed on `node` asks to join local match `match_id` by `attempt`:
    /// `false` when a leave of that attempt (or a later one) came first.
    pub(super) fn guest_joining(
        &mut self,
        node: &str,
        match_id: MatchId,
        session: SessionId,
        attempt: u64,
    ) -> bool {
        let g = self.guests.entry(node.to_owned()).or_default();
        let key = (match_id, session);
        if g.left.get(&key).is_some_and(|left| *left >= attempt) {
            return false;
        }
        let current = g.members.entry(key).or_insert(attempt);
        *current = (*current).max(attempt);
        true
    }

    /// The attempt by which `session` of `node` is a member of `match_id`, if it is.
    pub(super) fn guest_attempt(
        &self,
        node: &str,
        match_id: MatchId,
        session: SessionId,
    ) -> Option<u64> {
        self.guests
            .get(node)
            .and_then(|g| g.members.get(&(match_id, session)))
            .copied()
    }

    /// Whether `session` of `node` is a member of `match_id` by `attempt` (its join
    /// was not undone while the table took it).
    pub(super) fn is_guest(
        &self,
        node: &str,
        match_id: MatchId,
        session: SessionId,
        attempt: u64,
    ) -> bool {
        self.guests
            .get(node)
            .and_then(|g| g.members.get(&(match_id, session)))
            .is_some_and(|a| *a == attempt)
    }

    /// A member homed on `node` left local match `match_id` (undoing `attempt`, or,
    /// with `None`, whatever made it one): whether the table should let it go. A leave
    /// older than the membership is stale; one of an attempt whose join has not come
    /// (yet) leaves a tombstone, so that join is refused.
    pub(super) fn guest_left(
        &mut self,
        node: &str,
        match_id: MatchId,
        session: SessionId,
        attempt: Option<u64>,
    ) -> bool {
        let g = self.guests.entry(node.to_owned()).or_default();
        let key = (match_id, session);
        let current = g.members.get(&key).copied();
        if let (Some(current), Some(a)) = (current, attempt) {
            if current > a {
                return false;
            }
        }
        if let Some(a) = attempt {
            if current.is_none_or(|c| c < a) {
                let left = g.left.entry(key).or_insert(a);
                *left = (*left).max(a);
                g.left_order.push_back(key);
                while g.left_order.len() > TOMBSTONES {
                    if let Some(old) = g.left_order.pop_front() {
                        g.left.remove(&old);
                    }
                }
            }
        }
        current.is_some() && g.members.remove(&key).is_some()
    }

    /// Every member homed on `node` (with the attempt that made it one), now to leave
    /// local matches.
    pub(super) fn drop_guests(&mut self, node: &str) -> Vec<(MatchId, SessionId, u64)> {
        self.guests
            .remove(node)
            .map(|g| g.members.into_iter().map(|((m, s), a)| (m, s, a)).collect())
            .unwrap_or_default()
    }

    /// The nodes with members of local matches or hosting matches of local sessions.
    pub(super) fn nodes(&self) -> HashSet<String> {
        let mut nodes: HashSet<String> = self
            .guests
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        nodes.extend(self.remote.values().map(|m| m.host.node.clone()));
        nodes
    }

    /// Local sessions in remote matches, and members of local matches homed elsewhere.
    pub(super) fn counts(&self) -> (usize, usize) {
        (
            self.remote.values().map(|m| m.members.len()).sum(),
            self.guests.values().map(|g| g.members.len()).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::wire::sender as node;

    #[test]
    fn a_home_aliases_remote_matches_and_forgets_them_with_their_host() {
        let mut m = Memberships::default();
        let (id, other) = (MatchId::new_random(), MatchId::new_random());
        let (s1, s2) = (SessionId::new_random(), SessionId::new_random());
        let a = node("a", 1);
        let t1 = m.joining(id, s1);
        assert!(m.in_scope(&node("z", 9), id, s1), "joining: any host");
        let alias = m.joined(id, s1, &a, 5, t1);
        assert_ne!(alias & ALIAS_BIT, 0);
        assert!(!m.in_scope(&node("z", 9), id, s1), "joined: its host only");
        let t2 = m.joining(id, s2);
        assert!(t2 > t1, "attempts are numbered");
        assert_eq!(m.joined(id, s2, &a, 5, t2), alias, "one alias per match");
        let t3 = m.joining(other, s1);
        let other_alias = m.joined(other, s1, &node("b", 1), 5, t3);
        assert_ne!(other_alias, alias);
        assert_eq!(
            m.by_alias(alias, s2)
                .map(|(i, h)| (i, h.host_handle, h.attempt)),
            Some((id, 5, t2))
        );
        assert_eq!(
            m.by_alias(alias, SessionId::new_random()),
            None,
            "not a member"
        );
        assert_eq!(m.left(id, s2), Some((a.clone(), t2)));
        assert_eq!(m.left(id, s2), None);
        assert!(
            !m.ended_by(&node("b", 1), id, s1, t1),
            "only its host ends it"
        );
        assert_eq!(m.drop_host("a"), vec![(id, s1, t1)]);
        assert_eq!(m.by_alias(alias, s1), None);
        assert_eq!(m.counts(), (1, 0));
        assert!(
            !m.ended_by(&node("b", 1), other, s1, t1),
            "another attempt's"
        );
        assert!(m.ended_by(&node("b", 1), other, s1, t3));
        assert_eq!(m.counts(), (0, 0));
    }

    #[test]
    fn a_join_attempt_dropped_midway_leaves_nothing() {
        let mut m = Memberships::default();
        let (id, s) = (MatchId::new_random(), SessionId::new_random());
        let old = m.joining(id, s);
        let new = m.joining(id, s);
        m.not_joined(id, s, old);
        assert!(
            m.in_scope(&node("a", 1), id, s),
            "the newer attempt still runs"
        );
        m.not_joined(id, s, new);
        assert!(!m.in_scope(&node("a", 1), id, s));
    }

    #[test]
    fn a_host_applies_joins_and_leaves_in_whatever_order_they_come() {
        let mut m = Memberships::default();
        let (id, s) = (MatchId::new_random(), SessionId::new_random());
        // Leave then rejoin, the rejoin first: the old leave is stale.
        assert!(m.guest_joining("b", id, s, 1));
        assert!(m.guest_joining("b", id, s, 2));
        assert!(!m.guest_left("b", id, s, Some(1)), "stale");
        assert!(m.is_guest("b", id, s, 2));
        assert_eq!(m.counts(), (0, 1));
        // A join given up by its home: its leave first, then the join is refused.
        let other = MatchId::new_random();
        assert!(!m.guest_left("b", other, s, Some(3)));
        assert!(!m.guest_joining("b", other, s, 3));
        assert!(
            m.guest_joining("b", other, s, 4),
            "a later attempt is welcome"
        );
        // A leave undoing the current attempt (or any, without one) lets it go.
        assert!(m.guest_left("b", id, s, Some(2)));
        assert!(m.guest_left("b", other, s, None));
        assert_eq!(m.counts(), (0, 0));
        // A leave of a later attempt than the host saw: the member goes, and the join
        // of that attempt, still on its way, is refused.
        assert!(m.guest_joining("b", id, s, 5));
        assert!(m.guest_left("b", id, s, Some(6)));
        assert!(!m.guest_joining("b", id, s, 6));
        assert!(m.guest_joining("b", id, s, 7));
        assert_eq!(m.drop_guests("b"), vec![(id, s, 7)]);
        assert!(m.drop_guests("b").is_empty());
    }

    #[test]
    fn a_host_ending_a_join_before_its_answer_voids_the_answer() {
        let mut m = Memberships::default();
        let (id, s, a) = (MatchId::new_random(), SessionId::new_random(), node("a", 1));
        let t = m.joining(id, s);
        assert!(!m.ended_by(&a, id, s, t));
        assert_eq!(m.take_ended_joining(id, s, t), Some(false));
        assert_eq!(m.take_ended_joining(id, s, t), None, "once");
        assert_eq!(m.told_ended_while_joining(id, s), Some(t));
        assert_eq!(
            m.take_ended_joining(id, s, t),
            Some(true),
            "told: the answer stands"
        );
    }
}
