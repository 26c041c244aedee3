//! Connection ids that say which I/O loop owns their connection. With several loops
//! (`workers`), each loop's endpoint issues only ids whose first byte, modulo the
//! number of loops, is its own index; the ids are otherwise quinn-proto's hashed ones
//! (keyed by the server secret, so they validate across restarts). A packet that
//! arrives on another loop's socket (the kernel spreads sockets by address, and a
//! client that migrates changes its address) is handed to the owner by its id.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, HashedConnectionIdGenerator, InvalidCid};

/// Length of the ids this server issues.
pub(super) const CID_LEN: usize = 8;

/// Issues hashed ids owned by loop `index` of `loops`.
pub(super) struct SteeringCids {
    inner: HashedConnectionIdGenerator,
    index: usize,
    loops: usize,
}

impl SteeringCids {
    pub(super) fn new(key: u64, index: usize, loops: usize) -> Self {
        Self {
            inner: HashedConnectionIdGenerator::from_key(key),
            index,
            loops: loops.max(1),
        }
    }
}

impl ConnectionIdGenerator for SteeringCids {
    fn generate_cid(&mut self) -> ConnectionId {
        // About `loops` draws on average; ids are issued a few times per connection.
        loop {
            let cid = self.inner.generate_cid();
            if owner_of(&cid, self.loops) == self.index {
                return cid;
            }
        }
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        self.inner.validate(cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn owner_of(cid: &[u8], loops: usize) -> usize {
    cid.first().map_or(0, |b| usize::from(*b) % loops.max(1))
}

/// The loop that owns the connection a packet is for, when its destination id is one
/// this server issued; `None` for a client-chosen id (a new connection's Initial,
/// which the loop whose socket got it takes) or a packet too short to tell.
pub(super) fn owner(packet: &[u8], check: &SteeringCids) -> Option<usize> {
    let first = *packet.first()?;
    let dcid = if first & 0x80 == 0 {
        packet.get(1..1 + CID_LEN)?
    } else {
        if usize::from(*packet.get(5)?) != CID_LEN {
            return None;
        }
        packet.get(6..6 + CID_LEN)?
    };
    let cid = ConnectionId::new(dcid);
    check.validate(&cid).ok()?;
    Some(owner_of(dcid, check.loops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loop_issues_only_its_own_ids_and_packets_find_their_owner() {
        for loops in [1, 2, 3, 8] {
            for index in 0..loops {
                let mut cids = SteeringCids::new(42, index, loops);
                for _ in 0..50 {
                    let cid = cids.generate_cid();
                    assert_eq!(owner_of(&cid, loops), index);
                    // A short-header packet and a long-header one carrying it.
                    let mut short = vec![0x40];
                    short.extend_from_slice(&cid);
                    short.extend_from_slice(&[0; 20]);
                    assert_eq!(owner(&short, &cids), Some(index));
                    let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
                    long.extend_from_slice(&cid);
                    long.extend_from_slice(&[0; 20]);
                    assert_eq!(owner(&long, &cids), Some(index));
                }
            }
        }
    }

    #[test]
    fn foreign_short_or_garbage_packets_have_no_owner() {
        let cids = SteeringCids::new(42, 0, 2);
        assert_eq!(owner(&[], &cids), None);
        assert_eq!(owner(&[0x40, 1, 2], &cids), None);
        // An id the server never issued (another key).
        let mut other = SteeringCids::new(7, 0, 2);
        let mut short = vec![0x40];
        short.extend_from_slice(&other.generate_cid());
        assert_eq!(owner(&short, &cids), None);
        // A long header with a client-chosen id of another length.
        assert_eq!(owner(&[0xc0, 0, 0, 0, 1, 16, 9, 9, 9], &cids), None);
    }
}
