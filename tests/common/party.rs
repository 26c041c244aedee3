//! What party events say, for the party tests: each helper fails the test on any other
//! event.

use quicmatch_client::{Event, PartyInfo, Presence};

/// The snapshot a new member gets.
pub fn snapshot(event: Event) -> PartyInfo {
    match event {
        Event::Party(p) => p,
        other => panic!("expected a party snapshot, got {other:?}"),
    }
}

/// Who joined and who left.
pub fn presence_change(event: Event) -> (Vec<Presence>, Vec<Presence>) {
    match event {
        Event::PartyPresence { joins, leaves, .. } => (joins, leaves),
        other => panic!("expected a party presence event, got {other:?}"),
    }
}
