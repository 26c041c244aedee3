//! Arbitrary bytes into both datagram header decoders.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quicmatch_protocol::datagram::{ClientDatagram, RelayHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = ClientDatagram::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(ClientDatagram::decode(d.encode()).ok(), Some(d));
    }
    let _ = RelayHeader::decode(Bytes::copy_from_slice(data));
});
