//! Memberships that cross nodes (docs/cluster.md §5.2), both sides, pure bookkeeping:
//!
//! - as a *home*: the remote matches local sessions are in, each under a local *alias*
//!   handle (top bit set, so a datagram's handle says at once whether its match is
//!   local), with the host node and the host's handle; and the sessions still joining
//!   one, whose events may come before the host's answer;
//! - as a *host*: the members of local matches homed on each other node, so the loss
//!   of that node removes them.

use std::collections::{HashMap, HashSet};

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
    members: HashSet<SessionId>,
}

/// Where a remote match lives, as the home sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hosted {
    pub(super) host: Sender,
    pub(super) host_handle: u32,
    pub(super) alias: u32,
}

/// The cross-node memberships of one node.
#[derive(Debug, Default)]
pub(super) struct Memberships {
    remote: HashMap<MatchId, RemoteMatch>,
    aliases: HashMap<u32, MatchId>,
    next_alias: u32,
    /// Sessions joining a match not found locally, host not known yet.
    joining: HashMap<MatchId, HashSet<SessionId>>,
    /// Members of local matches homed on each other node.
    guests: HashMap<String, HashSet<(MatchId, SessionId)>>,
}

impl Memberships {
    /// `session` starts joining `match_id` somewhere else.
    pub(super) fn joining(&mut self, match_id: MatchId, session: SessionId) {
        self.joining.entry(match_id).or_default().insert(session);
    }

    /// The join ended without success.
    pub(super) fn not_joined(&mut self, match_id: MatchId, session: SessionId) {
        if let Some(set) = self.joining.get_mut(&match_id) {
            set.remove(&session);
            if set.is_empty() {
                self.joining.remove(&match_id);
            }
        }
    }

    /// `session` joined `match_id` on `host`; returns the alias its client is given.
    pub(super) fn joined(
        &mut self,
        match_id: MatchId,
        session: SessionId,
        host: &Sender,
        host_handle: u32,
    ) -> u32 {
        self.not_joined(match_id, session);
        if let Some(m) = self.remote.get_mut(&match_id) {
            if m.host == *host {
                m.host_handle = host_handle;
                m.members.insert(session);
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
                members: HashSet::from([session]),
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
        self.remote
            .get(&match_id)
            .filter(|m| m.members.contains(&session))
            .map(|m| Hosted {
                host: m.host.clone(),
                host_handle: m.host_handle,
                alias: m.alias,
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
            .is_some_and(|m| m.host == *host && m.members.contains(&session))
            || self
                .joining
                .get(&match_id)
                .is_some_and(|s| s.contains(&session))
    }

    /// `session` left remote match `match_id`; returns its host if it was a member.
    pub(super) fn left(&mut self, match_id: MatchId, session: SessionId) -> Option<Sender> {
        let m = self.remote.get_mut(&match_id)?;
        if !m.members.remove(&session) {
            return None;
        }
        let host = m.host.clone();
        if m.members.is_empty() {
            let alias = m.alias;
            self.remote.remove(&match_id);
            self.aliases.remove(&alias);
        }
        Some(host)
    }

    /// Every membership of local sessions in matches hosted by `node`, now ended.
    pub(super) fn drop_host(&mut self, node: &str) -> Vec<(MatchId, SessionId)> {
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
                ended.extend(m.members.into_iter().map(|s| (id, s)));
            }
        }
        ended
    }

    /// A member homed on `node` joined local match `match_id`.
    pub(super) fn guest_joined(&mut self, node: &str, match_id: MatchId, session: SessionId) {
        self.guests
            .entry(node.to_owned())
            .or_default()
            .insert((match_id, session));
    }

    /// A member homed on `node` left local match `match_id`.
    pub(super) fn guest_left(&mut self, node: &str, match_id: MatchId, session: SessionId) {
        if let Some(set) = self.guests.get_mut(node) {
            set.remove(&(match_id, session));
        }
    }

    /// Every member homed on `node`, now to leave local matches.
    pub(super) fn drop_guests(&mut self, node: &str) -> Vec<(MatchId, SessionId)> {
        self.guests
            .remove(node)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// The nodes with members of local matches or hosting matches of local sessions.
    pub(super) fn nodes(&self) -> HashSet<String> {
        let mut nodes: HashSet<String> = self.guests.keys().cloned().collect();
        nodes.extend(self.remote.values().map(|m| m.host.node.clone()));
        nodes
    }

    /// Local sessions in remote matches, and members of local matches homed elsewhere.
    pub(super) fn counts(&self) -> (usize, usize) {
        (
            self.remote.values().map(|m| m.members.len()).sum(),
            self.guests.values().map(HashSet::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, incarnation: u64) -> Sender {
        Sender {
            node: name.into(),
            incarnation,
        }
    }

    #[test]
    fn a_home_aliases_remote_matches_and_forgets_them_with_their_host() {
        let mut m = Memberships::default();
        let (id, other) = (MatchId::new_random(), MatchId::new_random());
        let (s1, s2) = (SessionId::new_random(), SessionId::new_random());
        let a = node("a", 1);
        m.joining(id, s1);
        assert!(m.in_scope(&node("z", 9), id, s1), "joining: any host");
        let alias = m.joined(id, s1, &a, 5);
        assert_ne!(alias & ALIAS_BIT, 0);
        assert!(!m.in_scope(&node("z", 9), id, s1), "joined: its host only");
        assert_eq!(m.joined(id, s2, &a, 5), alias, "one alias per match");
        let other_alias = m.joined(other, s1, &node("b", 1), 5);
        assert_ne!(other_alias, alias);
        assert_eq!(
            m.by_alias(alias, s2).map(|(i, h)| (i, h.host_handle)),
            Some((id, 5))
        );
        assert_eq!(
            m.by_alias(alias, SessionId::new_random()),
            None,
            "not a member"
        );
        assert_eq!(m.left(id, s2), Some(a.clone()));
        assert_eq!(m.left(id, s2), None);
        let mut ended = m.drop_host("a");
        ended.sort();
        assert_eq!(ended, vec![(id, s1)]);
        assert_eq!(m.by_alias(alias, s1), None);
        assert_eq!(m.counts(), (1, 0));
    }

    #[test]
    fn a_host_knows_its_guests_by_node() {
        let mut m = Memberships::default();
        let (id, s1, s2) = (
            MatchId::new_random(),
            SessionId::new_random(),
            SessionId::new_random(),
        );
        m.guest_joined("b", id, s1);
        m.guest_joined("b", id, s2);
        m.guest_left("b", id, s1);
        assert_eq!(m.counts(), (0, 1));
        assert_eq!(m.drop_guests("b"), vec![(id, s2)]);
        assert!(m.drop_guests("b").is_empty());
    }
}
