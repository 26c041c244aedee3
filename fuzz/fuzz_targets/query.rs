//! Arbitrary text into the matchmaker query parser, and any query that parses
//! evaluated against a few property sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quicmatch::matchmaker::query::{Properties, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(q) = Query::parse(text) {
        let mut p = Properties::default();
        p.strings.insert("region".into(), "eu-west".into());
        p.numbers.insert("rank".into(), 7.0);
        let _ = q.score(&p);
        let _ = q.score(&Properties::default());
        let _ = q.required_terms();
    }
});
