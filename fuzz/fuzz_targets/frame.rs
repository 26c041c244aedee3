//! Arbitrary bytes into the control-stream framing and both envelope decoders.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quicmatch_protocol::frame;

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode_client(data);
    let _ = frame::decode_server(data);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(body)) = frame::split_frame(&mut buf) {
        if let Ok(env) = frame::decode_client(&body) {
            // Whatever decodes must encode again.
            let again = frame::encode(&env).expect("re-encode");
            assert_eq!(frame::decode_client(&again[frame::LEN_PREFIX..]).ok(), Some(env));
        }
    }
});
