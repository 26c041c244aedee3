//! Named matches' claims over a node's life (docs/cluster.md §5.1): a node that takes a
//! new incarnation claims its live named matches again, and a node gives up the claims
//! of matches that ended here. The claims themselves live in JetStream
//! (`nats::Owners`).

use std::time::Instant;

use tracing::warn;

use super::{
    nats::{Claimed, Owners},
    wire::Sender,
    Inner, Local,
};

/// Claims again, for this incarnation, the names of the local matches the last one
/// claimed; one another node took meanwhile is said (its match and this one now share
/// a name, until one ends).
pub(super) async fn reclaim(inner: &Inner, owners: &Owners, me: &Sender, local: &dyn Local) {
    let ids: Vec<quicmatch_protocol::MatchId> = inner.state().claims.keys().copied().collect();
    for id in ids {
        if !local.is_live(id) {
            inner.state().claims.remove(&id);
            continue;
        }
        let live = |s: &Sender| inner.view().is_peer_name(&s.node);
        match owners.claim(id, me, live).await {
            Ok(Claimed::Mine(revision)) => {
                inner.state().claims.insert(id, (revision, None));
            }
            Ok(Claimed::Theirs(owner, _)) => {
                warn!(match_id = %id, node = %owner.node, "cluster: another node took this node's named match meanwhile");
                inner.state().claims.remove(&id);
            }
            Err(e) => {
                warn!(match_id = %id, error = %e, "cluster: could not claim a named match again")
            }
        }
    }
}

/// Gives up the claims on named matches that ended here: those seen ended for longer
/// than `request_timeout` (so a claim made just before its match is created, or a
/// match a late join brought back, keeps its name). The deletes run on their own.
pub(super) fn release_ended(inner: &Inner, owners: &Owners, local: &dyn Local) {
    let ids: Vec<quicmatch_protocol::MatchId> = inner.state().claims.keys().copied().collect();
    // Asked of the tables without the cluster's lock.
    let live: Vec<(quicmatch_protocol::MatchId, bool)> =
        ids.into_iter().map(|id| (id, local.is_live(id))).collect();
    let now = Instant::now();
    let mut released = Vec::new();
    {
        let mut st = inner.state();
        for (id, live) in live {
            let Some((revision, ended)) = st.claims.get_mut(&id) else {
                continue;
            };
            if live {
                *ended = None;
            } else if now.saturating_duration_since(*ended.get_or_insert(now))
                > inner.config.request_timeout
            {
                released.push((id, *revision));
            }
        }
        for (id, _) in &released {
            st.claims.remove(id);
        }
    }
    if !released.is_empty() {
        let owners = owners.clone();
        let wait = inner.config.request_timeout;
        tokio::spawn(async move {
            for (id, revision) in released {
                let _ = tokio::time::timeout(wait, owners.release(id, revision)).await;
            }
        });
    }
}
