//! Well-formed messages on a node's subjects that claim to come from a node that is not
//! a live peer (an unknown name, a stale incarnation, this node's own name) or that are
//! meant for another incarnation of this node: none reaches a table. The same message
//! from the live peer does, so the check is what stops the others. A live peer's party
//! request that is no party request of another node is refused with `BAD_INPUT`.
//! (Garbage, truncated and oversized messages are `tests/cluster_hostile.rs`'s, end to
//! end.)

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use bytes::Bytes;
use quicmatch_protocol::{
    envelope::Response, frame, MatchId, MatchInfo, MatchListRequest, PartyId, Presence, Request,
    SessionId, UserId,
};

use super::{
    registry::NodeRecord,
    serve::{self, Answer},
    wire::{self, sender, DatagramBody, DatagramMsg, Item, LinkMsg, RequestBody},
    Cluster, Inner, Joining, Listed, Local, Refusal, Sender,
};
use crate::{
    config::ClusterConfig,
    outbound::{RemotePeer, SessionHandle},
};

/// Counts every call the cluster makes into the tables.
#[derive(Default)]
struct Tables(AtomicUsize);

impl Tables {
    fn touched(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn refused() -> Refusal {
    Refusal::new(quicmatch_protocol::ErrorCode::BAD_INPUT, "test")
}

impl Local for Tables {
    fn join(
        &self,
        _: MatchId,
        _: Presence,
        _: Arc<dyn RemotePeer>,
        _: bool,
        _: BTreeMap<String, String>,
    ) -> Joining {
        self.touched();
        Joining::Done(Err(refused()))
    }
    fn is_live(&self, _: MatchId) -> bool {
        self.touched();
        false
    }
    fn data(
        &self,
        _: MatchId,
        _: SessionId,
        _: i64,
        _: Bytes,
        _: Option<&[SessionId]>,
    ) -> Result<(), Refusal> {
        self.touched();
        Ok(())
    }
    fn datagram(&self, _: SessionId, _: Bytes) -> Result<(), Refusal> {
        self.touched();
        Ok(())
    }
    fn leave(&self, _: MatchId, _: SessionId) -> bool {
        self.touched();
        false
    }
    fn session(&self, _: SessionId) -> Option<SessionHandle> {
        self.touched();
        None
    }
    fn infos(&self, _: SessionId, _: &[MatchId]) -> Vec<MatchInfo> {
        self.touched();
        Vec::new()
    }
    fn list(&self, _: &MatchListRequest) -> Result<Vec<Listed>, Refusal> {
        self.touched();
        Ok(Vec::new())
    }
    fn matchmaker(&self) -> crate::matchmaker::Matchmaker {
        unreachable!("no message in these tests asks for the matchmaker")
    }
    fn party_hosted(&self, _: PartyId) -> bool {
        self.touched();
        true
    }
    fn party(
        &self,
        _: &str,
        _: Presence,
        _: Arc<dyn RemotePeer>,
        _: Request,
    ) -> Result<Option<Response>, Refusal> {
        self.touched();
        Ok(Some(Response::Ack))
    }
    fn party_data(
        &self,
        _: &str,
        _: PartyId,
        _: SessionId,
        _: i64,
        _: Bytes,
    ) -> Result<(), Refusal> {
        self.touched();
        Ok(())
    }
    fn parties_of(&self, _: SessionId) -> Vec<PartyId> {
        self.touched();
        Vec::new()
    }
    fn party_left(&self, _: &str, _: PartyId, _: SessionId) {
        self.touched();
    }
    fn party_gone(&self, _: &str, _: SessionId) {
        self.touched();
    }
    fn party_gone_anywhere(&self, _: SessionId) {
        self.touched();
    }
    fn party_guests(&self, _: Option<&str>) -> Vec<SessionId> {
        self.touched();
        Vec::new()
    }
}

/// `node-a` (incarnation 1), which sees `node-b` (incarnation 7) live.
fn node_a() -> Arc<Inner> {
    let config = ClusterConfig {
        url: Some("nats://127.0.0.1:1".into()),
        node_name: Some("node-a".into()),
        ..ClusterConfig::default()
    };
    let inner = Cluster::new(&config).inner.expect("a cluster");
    *inner.view() = super::registry::View::new("node-a", 1, config.node_ttl, config.heartbeat);
    let record = NodeRecord {
        incarnation: 7,
        address: "127.0.0.1:7351".into(),
        load: 0,
        sessions: 0,
        build: "test".into(),
    };
    inner.view().put("node-b", record, Instant::now());
    inner.state().me = Some(sender("node-a", 1));
    inner
}

/// Who may not be believed: a stranger, node-b's earlier self, and node-a itself.
fn forgers() -> [Sender; 3] {
    [
        sender("node-z", 7),
        sender("node-b", 6),
        sender("node-a", 1),
    ]
}

fn presence() -> Presence {
    Presence {
        user_id: UserId::new_random(),
        session_id: SessionId::new_random(),
        username: "mallory".into(),
    }
}

fn requests() -> Vec<RequestBody> {
    vec![
        RequestBody::Party {
            presence: presence(),
            request: Request::PartyJoin {
                party_id: PartyId::new_random(),
            },
        },
        RequestBody::Join {
            match_id: MatchId::new_random(),
            presence: presence(),
            attempt: 1,
            metadata: BTreeMap::new(),
        },
        RequestBody::Infos {
            session: SessionId::new_random(),
            matches: vec![MatchId::new_random()],
        },
        RequestBody::List(MatchListRequest {
            limit: 10,
            authoritative: None,
            label: None,
            min_size: None,
            max_size: None,
            query: None,
        }),
    ]
}

fn ask(inner: &Arc<Inner>, local: &Arc<dyn Local>, from: Sender, body: RequestBody) -> bool {
    let payload = frame::encode_peer(&wire::Request { from, body }).expect("encodes");
    match serve::on_request(inner, local, &payload) {
        Answer::Now(answer) => answer.is_some(),
        Answer::Later(_) => true,
    }
}

#[test]
fn requests_from_nodes_that_are_not_live_peers_reach_no_table() {
    let inner = node_a();
    let tables = Arc::new(Tables::default());
    let local: Arc<dyn Local> = tables.clone();
    for from in forgers() {
        for body in requests() {
            assert!(
                !ask(&inner, &local, from.clone(), body),
                "{from:?} was answered"
            );
        }
    }
    assert_eq!(tables.calls(), 0, "a forged request reached the tables");
    // The live peer is heard: the check, not the message, stopped the others.
    for body in requests() {
        assert!(ask(&inner, &local, sender("node-b", 7), body));
    }
    assert!(tables.calls() > 0);
}

#[tokio::test]
async fn link_items_and_datagrams_of_forgers_or_for_another_incarnation_reach_no_table() {
    let inner = node_a();
    let tables = Arc::new(Tables::default());
    let local: Arc<dyn Local> = tables.clone();
    let session = SessionId::new_random();
    let items = || {
        vec![
            Item::PartyGone { session },
            Item::PartyData {
                party_id: PartyId::new_random(),
                sender: session,
                op_code: 1,
                data: Bytes::from_static(b"x"),
            },
            Item::Leave {
                match_id: MatchId::new_random(),
                session,
                attempt: 1,
            },
        ]
    };
    let link = |from: Sender, to: u64| {
        frame::encode_peer(&LinkMsg {
            from,
            to,
            seq: 1,
            probe: false,
            items: items(),
        })
        .expect("encodes")
    };
    let datagram = |from: Sender, to: u64| {
        frame::encode_peer(&DatagramMsg {
            from,
            to,
            body: DatagramBody::ToHost {
                sender: session,
                datagram: Bytes::from_static(b"\x00\x00\x00\x01"),
            },
        })
        .expect("encodes")
    };
    for from in forgers() {
        serve::on_link(&inner, &local, &link(from.clone(), 1));
        serve::on_datagram(&inner, local.as_ref(), &datagram(from, 1));
    }
    // node-b, live, but to an incarnation of node-a that is not this one.
    serve::on_link(&inner, &local, &link(sender("node-b", 7), 2));
    serve::on_datagram(&inner, local.as_ref(), &datagram(sender("node-b", 7), 2));
    assert_eq!(tables.calls(), 0, "a forged message reached the tables");
    serve::on_link(&inner, &local, &link(sender("node-b", 7), 1));
    serve::on_datagram(&inner, local.as_ref(), &datagram(sender("node-b", 7), 1));
    assert!(tables.calls() > 0, "the live peer's are applied");
}

/// A live peer's `Party` request that is no party request of another node (a create,
/// which a home serves itself; data, which travels on the link; a match request) is
/// refused with `BAD_INPUT` and reaches no table.
#[test]
fn a_live_peers_party_request_that_is_no_party_request_is_refused() {
    let inner = node_a();
    let tables = Arc::new(Tables::default());
    let local: Arc<dyn Local> = tables.clone();
    let odd = [
        Request::PartyCreate {
            open: true,
            max_size: 4,
            label: None,
        },
        Request::PartyDataSend {
            party_id: PartyId::new_random(),
            op_code: 1,
            data: Bytes::from_static(b"hi"),
        },
        Request::MatchCreate { name: None },
    ];
    for request in odd {
        let kind = request.kind();
        let body = RequestBody::Party {
            presence: presence(),
            request,
        };
        let payload = frame::encode_peer(&wire::Request {
            from: sender("node-b", 7),
            body,
        })
        .expect("encodes");
        let Answer::Now(Some(answer)) = serve::on_request(&inner, &local, &payload) else {
            panic!("{kind}: no answer at once");
        };
        match frame::decode_peer::<wire::Reply>(&answer) {
            Ok(wire::Reply::Party(Err(refusal))) => {
                assert_eq!(
                    refusal.code,
                    quicmatch_protocol::ErrorCode::BAD_INPUT,
                    "{kind}"
                );
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    assert_eq!(tables.calls(), 0, "a refused request reached the tables");
}
