//! The listing index's tests: each rule alone, then a proptest against a brute-force
//! reference over 1,000 matches, and 10,000 matches for scale.
use std::collections::BTreeMap;

use proptest::{prelude::*, sample::select, strategy::ValueTree, test_runner::TestRunner};
use uuid::Uuid;

use super::*;

fn id(n: u128) -> MatchId {
    MatchId(Uuid::from_u128(n))
}

fn entry(n: u128, label: Option<&str>) -> ListEntry {
    ListEntry {
        match_id: id(n),
        authoritative: false,
        label: label.map(Into::into),
        size: 1,
        max_size: 4,
        tick_rate: 0,
        handler: Arc::from(""),
        private: false,
    }
}

fn sized(n: u128, size: u32, max_size: u32) -> ListEntry {
    ListEntry {
        size,
        max_size,
        ..entry(n, None)
    }
}

fn req() -> MatchListRequest {
    MatchListRequest {
        limit: MAX_LIST_LIMIT,
        authoritative: None,
        label: None,
        min_size: None,
        max_size: None,
        query: None,
    }
}

fn with_query(q: &str) -> MatchListRequest {
    MatchListRequest {
        query: Some(q.into()),
        ..req()
    }
}

fn ids(index: &ListingIndex, req: &MatchListRequest) -> Vec<u128> {
    index
        .list(req)
        .unwrap_or_else(|e| panic!("{req:?}: {}", e.message))
        .iter()
        .map(|l| l.match_id.0.as_u128())
        .collect()
}

fn query_ids(index: &ListingIndex, q: &str) -> Vec<u128> {
    ids(index, &with_query(q))
}

fn rejected(index: &ListingIndex, req: &MatchListRequest) -> String {
    let e = index.list(req).expect_err("must be rejected");
    assert_eq!(e.code, ErrorCode::BAD_INPUT, "{}", e.message);
    e.message
}

fn index_of(entries: impl IntoIterator<Item = ListEntry>) -> ListingIndex {
    let mut index = ListingIndex::default();
    for e in entries {
        index.upsert(e);
    }
    index
}

#[test]
fn limit_must_be_1_to_max() {
    let index = index_of((1..=150).map(|n| entry(n, None)));
    for limit in [0, MAX_LIST_LIMIT + 1, u32::MAX] {
        let msg = rejected(&index, &MatchListRequest { limit, ..req() });
        assert!(msg.contains("limit must be 1 to 100"), "{msg}");
    }
    for limit in [1, 7, MAX_LIST_LIMIT] {
        let got = ids(&index, &MatchListRequest { limit, ..req() });
        assert_eq!(got.len(), limit as usize);
        // Newest first: the first `limit` of the whole order.
        assert_eq!(
            got,
            (1..=150).rev().take(limit as usize).collect::<Vec<_>>()
        );
    }
}

#[test]
fn size_filters_are_inclusive_and_checked() {
    let index = index_of((0..6).map(|n| sized(n.into(), n, 10)));
    let range = |min, max| {
        ids(
            &index,
            &MatchListRequest {
                min_size: min,
                max_size: max,
                ..req()
            },
        )
    };
    assert_eq!(range(Some(2), Some(4)), [4, 3, 2]);
    assert_eq!(range(Some(3), Some(3)), [3]);
    assert_eq!(range(Some(4), None), [5, 4]);
    assert_eq!(range(None, Some(1)), [1, 0]);
    assert_eq!(range(Some(0), Some(0)), [0]);
    let msg = rejected(
        &index,
        &MatchListRequest {
            min_size: Some(4),
            max_size: Some(3),
            ..req()
        },
    );
    assert!(
        msg.contains("min_size 4 is greater than max_size 3"),
        "{msg}"
    );
}

#[test]
fn authoritative_filters_the_kind() {
    let mut index = index_of([entry(1, None), entry(2, None)]);
    index.upsert(ListEntry {
        authoritative: true,
        tick_rate: 10,
        handler: Arc::from("arena"),
        ..entry(3, None)
    });
    let kind = |a| {
        ids(
            &index,
            &MatchListRequest {
                authoritative: a,
                ..req()
            },
        )
    };
    assert_eq!(kind(Some(true)), [3]);
    assert_eq!(kind(Some(false)), [2, 1]);
    assert_eq!(kind(None), [3, 2, 1]);
    let listed = index
        .list(&MatchListRequest {
            authoritative: Some(true),
            ..req()
        })
        .expect("list");
    assert_eq!(
        listed,
        [MatchListing {
            match_id: id(3),
            authoritative: true,
            label: None,
            size: 1,
            max_size: 4,
            tick_rate: 10,
            handler: "arena".into(),
        }]
    );
}

#[test]
fn label_filter_is_an_exact_whole_label_match() {
    let index = index_of([
        entry(1, Some("eu")),
        entry(2, Some("eu west")),
        entry(3, Some("EU")),
        entry(4, None),
        entry(5, Some("")),
        entry(6, Some(r#"{"mode":"eu"}"#)),
    ]);
    let label = |l: &str| {
        ids(
            &index,
            &MatchListRequest {
                label: Some(l.into()),
                ..req()
            },
        )
    };
    assert_eq!(label("eu"), [1]);
    assert_eq!(label("eu west"), [2]);
    assert_eq!(label(""), [5]);
    assert_eq!(label(r#"{"mode":"eu"}"#), [6]);
    assert!(label("e").is_empty());
}

#[test]
fn private_matches_are_never_listed() {
    let mut index = index_of([
        entry(1, Some("open")),
        ListEntry {
            private: true,
            ..entry(2, Some("open"))
        },
    ]);
    let everything = [
        req(),
        with_query("*"),
        with_query("label:open"),
        MatchListRequest {
            label: Some("open".into()),
            min_size: Some(1),
            max_size: Some(1),
            authoritative: Some(false),
            ..req()
        },
    ];
    for r in &everything {
        assert_eq!(ids(&index, r), [1], "{r:?}");
    }
    index.set_size(id(2), 3);
    index.set_label(id(2), Some("other".into()));
    assert_eq!(ids(&index, &req()), [1]);
    // Turning private by replacement hides a listed match too.
    index.upsert(ListEntry {
        private: true,
        ..entry(1, Some("open"))
    });
    assert!(ids(&index, &req()).is_empty());
    assert_eq!(index.len(), 2);
}

#[test]
fn full_matches_are_listed_after_open_ones() {
    let index = index_of([
        sized(1, 4, 4),
        sized(2, 1, 4),
        sized(3, 5, 4),
        sized(4, 0, 0),
    ]);
    assert_eq!(ids(&index, &req()), [2, 3, 1, 4]);
}

#[test]
fn order_is_open_then_fuller_then_newest() {
    // Created in id order: 1 oldest, 8 newest.
    let index = index_of([
        sized(1, 2, 8),
        sized(2, 2, 8),
        sized(3, 7, 8),
        sized(4, 8, 8),
        sized(5, 2, 2),
        sized(6, 2, 8),
        sized(7, 1, 8),
        sized(8, 8, 8),
    ]);
    // Open: 3 (size 7), then size 2 newest first (6, 2, 1), then 7 (size 1);
    // full: size 8 newest first (8, 4), then 5 (size 2).
    assert_eq!(ids(&index, &req()), [3, 6, 2, 1, 7, 8, 4, 5]);
    let top = ids(&index, &MatchListRequest { limit: 3, ..req() });
    assert_eq!(top, [3, 6, 2]);
}

#[test]
fn score_orders_first_when_a_query_is_given() {
    let index = index_of([
        ListEntry {
            size: 3,
            ..entry(1, Some(r#"{"mode":"ranked","map":"dust"}"#))
        },
        entry(2, Some(r#"{"mode":"ranked","map":"nuke"}"#)),
        entry(3, Some(r#"{"mode":"casual","map":"dust"}"#)),
        ListEntry {
            size: 4,
            ..entry(4, Some(r#"{"mode":"casual","map":"nuke"}"#))
        },
    ]);
    // ranked+dust = 4, ranked = 3, dust = 1; 4 fails.
    assert_eq!(
        query_ids(&index, "label.mode:ranked^3 label.map:dust"),
        [1, 2, 3]
    );
    assert_eq!(
        query_ids(&index, "label.mode:ranked label.map:dust^3"),
        [1, 3, 2]
    );
    // Constant scores leave the other rules in charge: 1 is fuller than 2.
    assert_eq!(query_ids(&index, "+label.mode:ranked"), [1, 2]);
    assert_eq!(query_ids(&index, "*"), [1, 3, 2, 4]);
    assert_eq!(ids(&index, &req()), [1, 3, 2, 4]);
}

#[test]
fn extreme_boosts_keep_a_total_order() {
    let index = index_of((1..=20).map(|n| {
        let label = format!(r#"{{"n":{n}}}"#);
        entry(n, Some(&label))
    }));
    let huge = "9".repeat(300);
    for q in [
        format!("((label.n:>0^{huge})^{huge})^0 label.n:>10"),
        "label.n:>0^-0 label.n:<5^-0".to_owned(),
        format!("(label.n:>0^{huge})^{huge} label.n:>15"),
    ] {
        let got = query_ids(&index, &q);
        assert_eq!(got.len(), 20, "{q}");
    }
    // Zero boosts tie: newest first decides.
    assert_eq!(
        query_ids(&index, "label.n:>0^-0 label.n:>0^0"),
        (1..=20).rev().collect::<Vec<_>>()
    );
}

#[test]
fn replacing_keeps_age_and_remove_forgets() {
    let mut index = index_of([entry(1, None), entry(2, None), entry(3, None)]);
    assert_eq!(ids(&index, &req()), [3, 2, 1]);
    index.upsert(ListEntry {
        tick_rate: 5,
        ..entry(1, Some("x"))
    });
    assert_eq!(index.len(), 3);
    assert_eq!(ids(&index, &req()), [3, 2, 1]);
    index.remove(id(3));
    index.remove(id(3));
    index.remove(id(99));
    assert_eq!(index.len(), 2);
    assert_eq!(ids(&index, &req()), [2, 1]);
    index.set_size(id(1), 3);
    assert_eq!(ids(&index, &req()), [1, 2]);
    // A removed match that comes back is new.
    index.upsert(entry(3, None));
    assert_eq!(ids(&index, &req()), [1, 3, 2]);
    index.set_size(id(42), 1);
    index.set_label(id(42), Some("x".into()));
    for n in [1, 2, 3] {
        index.remove(id(n));
    }
    assert_eq!(index.len(), 0);
    assert!(ids(&index, &req()).is_empty());
}

#[test]
fn label_updates_are_visible_to_the_next_list() {
    let mut index = index_of([entry(1, Some(r#"{"mode":"casual"}"#))]);
    assert!(query_ids(&index, "label.mode:ranked").is_empty());
    index.set_label(id(1), Some(r#"{"mode":"ranked"}"#.into()));
    assert_eq!(query_ids(&index, "label.mode:ranked"), [1]);
    assert!(query_ids(&index, "label.mode:casual").is_empty());
    index.set_label(id(1), Some("lobby".into()));
    assert!(query_ids(&index, "label.mode:ranked").is_empty());
    assert_eq!(query_ids(&index, "label:lobby"), [1]);
    index.set_label(id(1), None);
    assert!(query_ids(&index, "label:*").is_empty());
    assert_eq!(query_ids(&index, "-label:lobby"), [1]);
    let listed = index.list(&req()).expect("list");
    assert_eq!(listed[0].label, None);
    index.upsert(entry(1, Some(r#"{"mode":"duo"}"#)));
    assert_eq!(query_ids(&index, "label.mode:duo"), [1]);
}

#[test]
fn non_object_labels_are_the_bare_label_field() {
    let index = index_of([
        entry(1, Some("casual")),
        entry(2, Some("eu west")),
        entry(3, Some("42")),
        entry(4, Some(r#""quoted""#)),
        entry(5, Some("[1,2]")),
        entry(6, Some("{broken")),
        entry(7, Some(r#"{"label":"casual"}"#)),
        entry(8, None),
        entry(9, Some("true")),
    ]);
    assert_eq!(query_ids(&index, "label:casual"), [1]);
    assert_eq!(query_ids(&index, "+label:\"eu west\""), [2]);
    assert_eq!(query_ids(&index, "label:eu*"), [2]);
    assert_eq!(query_ids(&index, "label:42"), [3]);
    // The raw text: a JSON string keeps its quotes, a number is not numeric.
    assert!(query_ids(&index, "label:>40").is_empty());
    assert_eq!(query_ids(&index, "label:\"\\\"quoted\\\"\""), [4]);
    assert_eq!(query_ids(&index, "label:\"[1,2]\""), [5]);
    assert!(query_ids(&index, "label.0:1").is_empty());
    assert_eq!(query_ids(&index, "label:\\{broken"), [6]);
    assert_eq!(query_ids(&index, "label:true"), [9]);
    // Objects have no bare field; their keys are `label.<key>`.
    assert_eq!(query_ids(&index, "label:*"), [9, 6, 5, 4, 3, 2, 1]);
    assert_eq!(query_ids(&index, "label.label:casual"), [7]);
    assert_eq!(query_ids(&index, "-label:*"), [8, 7]);
}

#[test]
fn nested_keys_are_dotted() {
    let index = index_of([
        entry(1, Some(r#"{"geo":{"region":"eu","ping":{"max":80}}}"#)),
        entry(2, Some(r#"{"geo":{"region":"us"}}"#)),
        entry(3, Some(r#"{"geo.region":"eu"}"#)),
        entry(4, Some(r#"{"":{"a":1},"b":{"":2}}"#)),
        entry(5, Some(r#"{"":5}"#)),
    ]);
    assert_eq!(query_ids(&index, "label.geo.region:eu"), [3, 1]);
    assert_eq!(query_ids(&index, "label.geo.ping.max:<=80"), [1]);
    assert!(query_ids(&index, "label.geo:*").is_empty());
    assert!(query_ids(&index, "label.region:eu").is_empty());
    // Empty keys keep their dots; a value under the empty top-level key is dropped.
    assert_eq!(query_ids(&index, "label..a:1"), [4]);
    assert_eq!(query_ids(&index, "label.b.:2"), [4]);
    assert!(query_ids(&index, "label:5").is_empty());
    assert!(query_ids(&index, "label:*").is_empty());
    assert_eq!(
        label_fields(Some(r#"{"a.b":1,"a":{"b":2}}"#)),
        label_fields(Some(r#"{"a":{"b":2},"a.b":1}"#))
    );
}

#[test]
fn booleans_strings_numbers_and_nulls() {
    let index = index_of([
        entry(
            1,
            Some(r#"{"open":true,"skill":12.5,"name":"x","gone":null}"#),
        ),
        entry(2, Some(r#"{"open":false,"skill":-3,"name":"12.5"}"#)),
    ]);
    assert_eq!(query_ids(&index, "label.open:true"), [1]);
    assert_eq!(query_ids(&index, "label.open:false"), [2]);
    assert_eq!(query_ids(&index, "label.open:/t.*/"), [1]);
    assert!(query_ids(&index, "label.open:>0").is_empty());
    assert_eq!(query_ids(&index, "label.skill:>=0"), [1]);
    assert_eq!(query_ids(&index, "label.skill:<0"), [2]);
    // A number term matches numbers and equal strings, as for tickets.
    assert_eq!(query_ids(&index, "label.skill:12.5"), [1]);
    assert_eq!(query_ids(&index, "label.name:12.5"), [2]);
    assert!(query_ids(&index, "label.gone:*").is_empty());
    assert_eq!(query_ids(&index, "-label.gone:*"), [2, 1]);
    let fields = label_fields(Some(r#"{"open":true,"skill":12.5,"gone":null}"#));
    assert_eq!(
        fields,
        Properties {
            strings: [("open".to_owned(), "true".to_owned())].into(),
            numbers: [("skill".to_owned(), 12.5)].into(),
        }
    );
}

#[test]
fn array_elements_are_indexed_by_position() {
    let index = index_of([
        entry(
            1,
            Some(r#"{"tags":["eu","duo"],"maps":[{"name":"dust","votes":3}]}"#),
        ),
        entry(
            2,
            Some(r#"{"tags":["duo"],"grid":[[1,2],[3,4]],"mixed":[true,null,7]}"#),
        ),
    ]);
    assert_eq!(query_ids(&index, "label.tags.0:eu"), [1]);
    assert_eq!(query_ids(&index, "label.tags.1:duo"), [1]);
    assert_eq!(query_ids(&index, "label.tags.0:duo"), [2]);
    assert_eq!(
        query_ids(&index, "label.tags.0:duo OR label.tags.1:duo"),
        [2, 1]
    );
    assert!(query_ids(&index, "label.tags:eu").is_empty());
    assert!(query_ids(&index, "label.tags:*").is_empty());
    assert_eq!(
        query_ids(&index, "+label.maps.0.name:dust +label.maps.0.votes:3"),
        [1]
    );
    assert_eq!(query_ids(&index, "label.grid.1.0:3"), [2]);
    assert_eq!(
        query_ids(&index, "+label.mixed.0:true +label.mixed.2:7"),
        [2]
    );
    assert!(query_ids(&index, "label.mixed.1:*").is_empty());
}

#[test]
fn bad_queries_say_where_and_why() {
    let index = index_of([entry(1, Some("x"))]);
    let cases = [
        ("label.mode:", "query error at byte 11: missing value after ':'"),
        (
            "+label.a:x properties.a:y",
            "query error at byte 11: field \"properties.a\" must be 'label' or 'label.<key>'",
        ),
        (
            "ranked",
            "query error at byte 0: expected 'label.<key>:<value>' or 'label:<value>', found \"ranked\"",
        ),
        ("label.:x", "query error at byte 0: field \"label.\" must be"),
        ("(label.a:x", "query error at byte 10: missing ')'"),
        ("label.a:/[/", "query error at byte 8: invalid regex"),
        ("label.skill:>high", "query error at byte 13: \"high\" is not a number"),
    ];
    for (q, want) in cases {
        let msg = rejected(&index, &with_query(q));
        assert!(msg.starts_with(want), "{q:?}: {msg}");
    }
    let long = format!("label:{}", "x".repeat(MAX_QUERY_LEN));
    let msg = rejected(&index, &with_query(&long));
    assert_eq!(msg, "query longer than 1024 bytes");
    // Exactly the limit is accepted.
    let q = format!("label:{}", "x".repeat(MAX_QUERY_LEN - 6));
    assert!(query_ids(&index, &q).is_empty());
    // Empty and blank queries are `*`.
    assert_eq!(query_ids(&index, ""), [1]);
    assert_eq!(query_ids(&index, "  "), [1]);
}

// ---- Brute force reference -------------------------------------------------------

/// A label the reference understands without parsing JSON.
#[derive(Debug, Clone)]
enum LabelModel {
    None,
    Text(&'static str),
    Object(ObjectModel),
}

#[derive(Debug, Clone)]
struct ObjectModel {
    mode: Option<&'static str>,
    skill: Option<u8>,
    map: Option<&'static str>,
    region: Option<&'static str>,
    ranked: Option<bool>,
    tags: Vec<&'static str>,
    note_null: bool,
}

static MODES: [&str; 2] = ["ranked", "casual"];
static MAPS: [&str; 3] = ["dust", "nuke", "inferno"];
static REGIONS: [&str; 3] = ["eu", "us", "asia"];
static TAGS: [&str; 3] = ["duo", "solo", "eu"];
static TEXTS: [&str; 8] = [
    "casual",
    "ranked",
    "eu west",
    "42",
    "{broken",
    "[1,2]",
    "\"quoted\"",
    "true",
];
/// A label some generated objects render to exactly.
const RANKED_ONLY: &str = r#"{"mode":"ranked"}"#;

impl ObjectModel {
    fn json(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.mode {
            parts.push(format!(r#""mode":"{m}""#));
        }
        if let Some(s) = self.skill {
            parts.push(format!(r#""skill":{s}"#));
        }
        if let Some(m) = self.map {
            parts.push(format!(r#""map":"{m}""#));
        }
        if let Some(r) = self.region {
            parts.push(format!(r#""geo":{{"region":"{r}"}}"#));
        }
        if let Some(b) = self.ranked {
            parts.push(format!(r#""rated":{b}"#));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|t| format!("\"{t}\"")).collect();
            parts.push(format!(r#""tags":[{}]"#, tags.join(",")));
        }
        if self.note_null {
            parts.push(r#""note":null"#.to_owned());
        }
        format!("{{{}}}", parts.join(","))
    }

    fn fields(&self) -> Properties {
        let mut p = Properties::default();
        let mut s = |k: &str, v: &str| p.strings.insert(k.to_owned(), v.to_owned());
        if let Some(m) = self.mode {
            s("mode", m);
        }
        if let Some(m) = self.map {
            s("map", m);
        }
        if let Some(r) = self.region {
            s("geo.region", r);
        }
        if let Some(b) = self.ranked {
            s("rated", if b { "true" } else { "false" });
        }
        for (i, t) in self.tags.iter().enumerate() {
            s(&format!("tags.{i}"), t);
        }
        if let Some(n) = self.skill {
            p.numbers.insert("skill".to_owned(), f64::from(n));
        }
        p
    }
}

impl LabelModel {
    fn text(&self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Text(t) => Some((*t).to_owned()),
            Self::Object(o) => Some(o.json()),
        }
    }

    fn fields(&self) -> Properties {
        match self {
            Self::None => Properties::default(),
            Self::Text(t) => Properties {
                strings: [(LABEL_KEY.to_owned(), (*t).to_owned())].into(),
                numbers: BTreeMap::new(),
            },
            Self::Object(o) => o.fields(),
        }
    }
}

#[derive(Debug, Clone)]
struct EntryModel {
    label: LabelModel,
    size: u32,
    max_size: u32,
    authoritative: bool,
    private: bool,
}

#[derive(Debug, Clone)]
enum Op {
    SetLabel(usize, LabelModel),
    SetSize(usize, u32),
    Remove(usize),
    Replace(usize, EntryModel),
    Insert(EntryModel),
}

/// The reference's view of one live match.
#[derive(Debug, Clone)]
struct RefMatch {
    id: MatchId,
    model: EntryModel,
    created: u64,
}

impl RefMatch {
    fn entry(&self) -> ListEntry {
        let m = &self.model;
        ListEntry {
            match_id: self.id,
            authoritative: m.authoritative,
            label: m.label.text(),
            size: m.size,
            max_size: m.max_size,
            tick_rate: if m.authoritative { 10 } else { 0 },
            handler: Arc::from(if m.authoritative { "arena" } else { "" }),
            private: m.private,
        }
    }
}

/// Ids whose order is unrelated to creation order.
fn scrambled_id(n: u64) -> MatchId {
    id(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// Straightforward listing: filter everything, score with the same `Query`, sort
/// by the documented rules, take `limit`.
fn reference(matches: &[RefMatch], req: &MatchListRequest) -> Vec<MatchListing> {
    let query = req
        .query
        .as_ref()
        .map(|q| Query::parse_fields(q, Fields::Label).expect("generated queries parse"));
    let mut hits: Vec<(f64, &RefMatch)> = Vec::new();
    for m in matches {
        let e = &m.model;
        if e.private {
            continue;
        }
        if let Some(a) = req.authoritative {
            if e.authoritative != a {
                continue;
            }
        }
        if let Some(min) = req.min_size {
            if e.size < min {
                continue;
            }
        }
        if let Some(max) = req.max_size {
            if e.size > max {
                continue;
            }
        }
        if let Some(label) = &req.label {
            if e.label.text().as_ref() != Some(label) {
                continue;
            }
        }
        let score = match &query {
            None => 0.0,
            Some(q) => match q.score(&e.label.fields()) {
                Some(s) => s,
                None => continue,
            },
        };
        hits.push((score, m));
    }
    hits.sort_by(|(sa, a), (sb, b)| {
        let full = |m: &RefMatch| m.model.size >= m.model.max_size;
        sb.partial_cmp(sa)
            .unwrap_or(Ordering::Equal)
            .then(full(a).cmp(&full(b)))
            .then(b.model.size.cmp(&a.model.size))
            .then(b.created.cmp(&a.created))
            .then(a.id.cmp(&b.id))
    });
    hits.iter()
        .take(req.limit as usize)
        .map(|(_, m)| m.entry().listing())
        .collect()
}

fn object_model() -> impl Strategy<Value = ObjectModel> {
    (
        proptest::option::of(select(&MODES[..])),
        proptest::option::of(0u8..100),
        proptest::option::of(select(&MAPS[..])),
        proptest::option::of(select(&REGIONS[..])),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(select(&TAGS[..]), 0..3),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(mode, skill, map, region, ranked, tags, note_null)| ObjectModel {
                mode,
                skill,
                map,
                region,
                ranked,
                tags,
                note_null,
            },
        )
}

fn label_model() -> impl Strategy<Value = LabelModel> {
    prop_oneof![
        1 => Just(LabelModel::None),
        1 => select(&TEXTS[..]).prop_map(LabelModel::Text),
        6 => object_model().prop_map(LabelModel::Object),
    ]
}

fn entry_model() -> impl Strategy<Value = EntryModel> {
    (
        label_model(),
        0u32..=8,
        1u32..=8,
        any::<bool>(),
        proptest::bool::weighted(0.15),
    )
        .prop_map(
            |(label, size, max_size, authoritative, private)| EntryModel {
                label,
                size,
                max_size,
                authoritative,
                private,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), label_model()).prop_map(|(i, l)| Op::SetLabel(i, l)),
        (any::<usize>(), 0u32..=8).prop_map(|(i, s)| Op::SetSize(i, s)),
        any::<usize>().prop_map(Op::Remove),
        (any::<usize>(), entry_model()).prop_map(|(i, e)| Op::Replace(i, e)),
        entry_model().prop_map(Op::Insert),
    ]
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn term() -> impl Strategy<Value = String> {
    let fields = prop_oneof![
        select(&MODES[..]).prop_map(|v| format!("label.mode:{v}")),
        (0u8..100).prop_map(|n| format!("label.skill:>={n}")),
        (0u8..100).prop_map(|n| format!("label.skill:<{n}")),
        (0u8..100).prop_map(|n| format!("label.skill:{n}")),
        select(&MAPS[..]).prop_map(|v| format!("label.map:{v}")),
        select(&REGIONS[..]).prop_map(|v| format!("label.geo.region:{v}")),
        any::<bool>().prop_map(|b| format!("label.rated:{b}")),
        (0usize..3, select(&TAGS[..])).prop_map(|(i, t)| format!("label.tags.{i}:{t}")),
    ];
    let shapes = prop_oneof![
        select(&TEXTS[..]).prop_map(|t| format!("label:{}", quote(t))),
        Just("label:*".to_owned()),
        Just("label.map:*".to_owned()),
        Just("label.note:*".to_owned()),
        Just("label.mode:r*".to_owned()),
        // A fuzzy term cannot take a boost directly (`~1^2` reads as fuzziness "1^2").
        Just("(label.map:dusk~1)".to_owned()),
        Just("label.geo.region:/(eu|us)/".to_owned()),
        Just("(label.map:dust OR label.map:nuke)".to_owned()),
        Just("(label.mode:ranked AND label.skill:>50)".to_owned()),
    ];
    prop_oneof![3 => fields, 1 => shapes]
}

fn query() -> impl Strategy<Value = String> {
    let item = (
        select(vec!["", "", "+", "-"]),
        term(),
        proptest::option::of(1u8..4),
    )
        .prop_map(|(prefix, term, boost)| match boost {
            Some(b) => format!("{prefix}{term}^{b}"),
            None => format!("{prefix}{term}"),
        });
    prop_oneof![
        1 => Just("*".to_owned()),
        12 => proptest::collection::vec(item, 1..5).prop_map(|items| items.join(" ")),
    ]
}

fn request() -> impl Strategy<Value = MatchListRequest> {
    (
        1u32..=MAX_LIST_LIMIT,
        proptest::option::weighted(0.3, any::<bool>()),
        proptest::option::weighted(
            0.1,
            prop_oneof![select(&TEXTS[..]), Just(RANKED_ONLY)].prop_map(str::to_owned),
        ),
        proptest::option::weighted(0.3, 0u32..=8),
        proptest::option::weighted(0.3, 0u32..=8),
        proptest::option::weighted(0.8, query()),
    )
        .prop_map(|(limit, authoritative, label, min, max, query)| {
            let (min_size, max_size) = match (min, max) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                other => other,
            };
            MatchListRequest {
                limit,
                authoritative,
                label,
                min_size,
                max_size,
                query,
            }
        })
}

/// Builds the index and the reference side by side, then applies `ops` to both.
fn build(models: Vec<EntryModel>, ops: Vec<Op>) -> (ListingIndex, Vec<RefMatch>) {
    let mut index = ListingIndex::default();
    let mut live: Vec<RefMatch> = Vec::new();
    let mut created = 0;
    let mut insert = |index: &mut ListingIndex, live: &mut Vec<RefMatch>, model| {
        let m = RefMatch {
            id: scrambled_id(created),
            model,
            created,
        };
        created += 1;
        index.upsert(m.entry());
        live.push(m);
    };
    for model in models {
        insert(&mut index, &mut live, model);
    }
    for op in ops {
        let n = live.len().max(1);
        match op {
            Op::Insert(model) => insert(&mut index, &mut live, model),
            _ if live.is_empty() => {}
            Op::SetLabel(i, label) => {
                let m = &mut live[i % n];
                index.set_label(m.id, label.text());
                m.model.label = label;
            }
            Op::SetSize(i, size) => {
                let m = &mut live[i % n];
                index.set_size(m.id, size);
                m.model.size = size;
            }
            Op::Remove(i) => {
                let m = live.remove(i % n);
                index.remove(m.id);
            }
            Op::Replace(i, model) => {
                let m = &mut live[i % n];
                m.model = model;
                index.upsert(m.entry());
            }
        }
    }
    (index, live)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn listing_agrees_with_brute_force(
        models in proptest::collection::vec(entry_model(), 1000),
        ops in proptest::collection::vec(op(), 0..60),
        reqs in proptest::collection::vec(request(), 8),
    ) {
        let (index, live) = build(models, ops);
        prop_assert_eq!(index.len(), live.len());
        for req in &reqs {
            let got = index.list(req).map_err(|e| TestCaseError::fail(e.message))?;
            let want = reference(&live, req);
            prop_assert_eq!(got, want, "{:?}", req);
        }
    }
}

#[test]
fn ten_thousand_labelled_matches() {
    let mut runner = TestRunner::deterministic();
    let models = proptest::collection::vec(
        entry_model().prop_map(|mut e| {
            if matches!(e.label, LabelModel::None) {
                e.label = LabelModel::Text("casual");
            }
            e
        }),
        10_000,
    )
    .new_tree(&mut runner)
    .expect("entries")
    .current();
    let (index, live) = build(models, Vec::new());
    assert_eq!(index.len(), 10_000);
    let reqs = proptest::collection::vec(request(), 100)
        .new_tree(&mut runner)
        .expect("requests")
        .current();
    let mut listed = 0;
    for req in &reqs {
        let got = index
            .list(req)
            .unwrap_or_else(|e| panic!("{req:?}: {}", e.message));
        assert_eq!(got, reference(&live, req), "{req:?}");
        listed += got.len();
    }
    // The requests are not all trivially empty.
    assert!(listed > 100, "{listed}");
}

#[test]
fn listings_of_several_nodes_merge_in_the_listing_order() {
    let ranked = |id: u128, score: f64, size: u32, max_size: u32, age_ns: u64| Ranked {
        listing: MatchListing {
            match_id: MatchId(Uuid::from_u128(id)),
            authoritative: false,
            label: None,
            size,
            max_size,
            tick_rate: 0,
            handler: String::new(),
        },
        score,
        age_ns,
        created: 0,
    };
    let node_a = vec![
        ranked(1, 2.0, 1, 4, 50),
        ranked(2, 0.0, 3, 4, 10),
        ranked(3, 0.0, 4, 4, 1),
    ];
    let node_b = vec![
        ranked(4, 1.0, 2, 4, 5),
        ranked(5, 0.0, 3, 4, 5),
        ranked(6, 0.0, 3, 4, 5),
    ];
    let ids =
        |l: Vec<MatchListing>| -> Vec<u128> { l.iter().map(|m| m.match_id.0.as_u128()).collect() };
    // Score first; then not full before full, fuller first, newer first, id.
    assert_eq!(
        ids(merge(vec![node_a.clone(), node_b.clone()], 10)),
        [1, 4, 5, 6, 2, 3]
    );
    assert_eq!(
        ids(merge(vec![node_b, node_a], 3)),
        [1, 4, 5],
        "the first `limit`"
    );
    assert!(merge(Vec::new(), 5).is_empty());
}
