use super::*;

fn props(strings: &[(&str, &str)], numbers: &[(&str, f64)]) -> Properties {
    Properties {
        strings: strings
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        numbers: numbers.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
    }
}

/// The four documents of the reference notes.
fn docs() -> Vec<Properties> {
    vec![
        props(
            &[
                ("mode", "ranked"),
                ("region", "eu-west"),
                ("maps", "map1 map2"),
                ("name", "john"),
                ("Cap", "EU"),
            ],
            &[("skill", 10.0)],
        ),
        props(
            &[
                ("mode", "casual"),
                ("region", "us-east"),
                ("name", "jon"),
                ("Cap", "eu"),
            ],
            &[("skill", 20.0)],
        ),
        props(
            &[
                ("mode", "ranked solo"),
                ("region", "eu"),
                ("name", "jane"),
                ("empty", ""),
            ],
            &[("skill", -5.0)],
        ),
        props(
            &[("mode", "ranked"), ("region", "asia")],
            &[("skill", 10.5)],
        ),
    ]
}

fn hits(q: &str) -> Vec<usize> {
    let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    docs()
        .iter()
        .enumerate()
        .filter(|(_, d)| q.matches(d))
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn star_and_empty_match_everyone() {
    assert_eq!(hits("*"), [1, 2, 3, 4]);
    assert_eq!(hits(""), [1, 2, 3, 4]);
    assert_eq!(hits(" * "), [1, 2, 3, 4]);
}

#[test]
fn should_must_and_must_not() {
    assert_eq!(hits("properties.mode:ranked"), [1, 4]);
    assert_eq!(hits("-properties.mode:ranked"), [2, 3]);
    assert_eq!(
        hits("properties.mode:ranked properties.region:eu"),
        [1, 3, 4]
    );
    assert_eq!(
        hits("+properties.mode:ranked +properties.region:eu"),
        Vec::<usize>::new()
    );
    assert_eq!(hits("+properties.mode:ranked -properties.region:asia"), [1]);
    assert_eq!(
        hits("+properties.mode:ranked properties.region:nowhere"),
        [1, 4]
    );
}

#[test]
fn values_are_exact_and_case_sensitive() {
    assert_eq!(hits("properties.Cap:EU"), [1]);
    assert_eq!(hits("properties.cap:eu"), Vec::<usize>::new());
    assert_eq!(hits("properties.maps:map1"), Vec::<usize>::new());
    assert_eq!(hits("properties.region:eu"), [3]);
}

#[test]
fn numeric_comparisons_and_boundaries() {
    assert_eq!(hits("properties.skill:>=10"), [1, 2, 4]);
    assert_eq!(hits("properties.skill:>10"), [2, 4]);
    assert_eq!(hits("properties.skill:<10"), [3]);
    assert_eq!(hits("properties.skill:<=10.5"), [1, 3, 4]);
    assert_eq!(hits("+properties.skill:>=10 +properties.skill:<=10"), [1]);
    assert_eq!(hits("properties.skill:-5"), [3]);
    assert_eq!(hits("properties.skill:10"), [1]);
    assert_eq!(hits("properties.skill:<0"), [3]);
    assert_eq!(hits("properties.skill:> 15"), [2]);
    // Ranges only look at numeric properties.
    assert_eq!(hits("properties.mode:>1"), Vec::<usize>::new());
}

#[test]
fn numbers_also_match_equal_strings() {
    let d = props(&[("code", "10")], &[]);
    assert!(Query::parse("properties.code:10")
        .expect("parse")
        .matches(&d));
    assert!(!Query::parse("properties.code:>5")
        .expect("parse")
        .matches(&d));
}

#[test]
fn phrases_match_the_exact_value() {
    assert_eq!(hits("properties.mode:\"ranked solo\""), [3]);
    assert_eq!(hits("properties.mode:ranked\\ solo"), [3]);
    assert_eq!(hits("properties.mode:\"ranked\""), [1, 4]);
    assert_eq!(hits("properties.maps:\"map1 map2\""), [1]);
}

#[test]
fn wildcards_regex_fuzzy_exists() {
    assert_eq!(hits("properties.region:eu*"), [1, 3]);
    assert_eq!(hits("properties.region:eu?west"), [1]);
    assert_eq!(hits("properties.region:*east"), [2]);
    assert_eq!(hits("properties.region:/eu.*/"), [1, 3]);
    assert_eq!(hits("properties.region:/eu/"), [3]);
    assert_eq!(hits("properties.maps:/.*map1.*/"), [1]);
    assert_eq!(hits("properties.maps:/.*(map2|map3).*/"), [1]);
    assert_eq!(hits("properties.name:jon~1"), [1, 2]);
    assert_eq!(hits("properties.name:jon~"), [1, 2]);
    assert_eq!(hits("properties.name:jon~0"), [2]);
    assert_eq!(hits("properties.name:jxnx~2"), [2, 3]);
    assert_eq!(hits("properties.empty:*"), [3]);
    assert_eq!(hits("properties.skill:*"), [1, 2, 3, 4]);
    assert_eq!(hits("-properties.empty:*"), [1, 2, 4]);
    // An escaped star is a literal star.
    let d = props(&[("x", "a*")], &[]);
    assert!(Query::parse("properties.x:a\\*")
        .expect("parse")
        .matches(&d));
    assert!(!Query::parse("properties.x:a\\*")
        .expect("parse")
        .matches(&props(&[("x", "ab")], &[])));
}

#[test]
fn boolean_operators_and_groups() {
    assert_eq!(
        hits("properties.mode:casual AND properties.region:asia"),
        Vec::<usize>::new()
    );
    assert_eq!(
        hits("properties.mode:casual OR properties.region:asia"),
        [2, 4]
    );
    assert_eq!(hits("(properties.mode:ranked)"), [1, 4]);
    assert_eq!(
        hits("+(properties.region:eu OR properties.region:asia) +properties.mode:ranked"),
        [4]
    );
    assert_eq!(
        hits("properties.mode:ranked AND NOT properties.region:asia"),
        [1]
    );
    assert_eq!(
        hits("properties.mode:ranked && !properties.region:asia"),
        [1]
    );
    assert_eq!(
        hits("(properties.skill:>15 || properties.skill:<0) AND properties.name:*"),
        [2, 3]
    );
    assert_eq!(hits("NOT properties.mode:ranked"), [2, 3]);
    assert_eq!(
        hits("+properties.mode:ranked -(properties.skill:>10 properties.region:eu-west)"),
        Vec::<usize>::new()
    );
    assert_eq!(
        hits("(+properties.mode:ranked -properties.region:asia) properties.mode:casual"),
        [1, 2]
    );
}

#[test]
fn should_terms_and_boosts_rank() {
    let q = Query::parse("+properties.mode:ranked properties.skill:10^3").expect("parse");
    let d = docs();
    assert_eq!(q.score(&d[0]), Some(4.0));
    assert_eq!(q.score(&d[3]), Some(1.0));
    assert_eq!(q.score(&d[1]), None);
    assert!(!q.is_constant_score());
    let q = Query::parse("(properties.mode:ranked properties.region:eu)^2").expect("parse");
    assert_eq!(q.score(&d[2]), Some(2.0));
    assert!(Query::parse("+properties.a:x -properties.b:y")
        .expect("p")
        .is_constant_score());
    assert!(Query::parse("*").expect("p").is_constant_score());
}

#[test]
fn required_terms_drive_the_index() {
    let q = Query::parse("+properties.region:eu +properties.rank:>=3 properties.x:y").expect("p");
    assert_eq!(q.required_terms(), vec![("region", "eu")]);
    let q = Query::parse("properties.region:eu").expect("p");
    assert_eq!(q.required_terms(), vec![("region", "eu")]);
    let q = Query::parse("properties.region:eu properties.region:us").expect("p");
    assert!(q.required_terms().is_empty());
    let q = Query::parse("properties.a:1 AND properties.b:x").expect("p");
    assert_eq!(q.required_terms(), vec![("b", "x")]);
}

#[test]
fn rejected_forms_say_where_and_why() {
    let cases = [
        ("properties.a:", 13, "missing value"),
        ("\"abc", 0, "expected 'properties"),
        ("properties.a:\"abc", 13, "unterminated"),
        ("properties.a:>abc", 14, "not a number"),
        ("properties.a:=5", 13, "equality"),
        ("+", 0, "followed by a term"),
        ("-", 0, "followed by a term"),
        ("123:abc", 0, "must be 'properties.<key>'"),
        ("mode:ranked", 0, "must be 'properties.<key>'"),
        ("ranked", 0, "expected 'properties"),
        ("properties.a:foo~x", 13, "fuzziness"),
        ("properties.a:foo~3", 13, "fuzziness"),
        ("properties.a:foo^x", 16, "boost"),
        ("properties.a:\"x\"~2", 16, "phrases"),
        ("properties.skill:5~1", 17, "plain text"),
        ("properties.a:/[/", 13, "invalid regex"),
        ("(properties.a:x", 15, "missing ')'"),
        ("properties.a:x)", 14, "unexpected ')'"),
        ("properties.a:x AND", 18, "expected a term"),
        ("properties.:x", 0, "must be 'properties.<key>'"),
        ("properties.a:x\\", 15, "dangling"),
    ];
    for (q, pos, reason) in cases {
        let e = Query::parse(q)
            .err()
            .unwrap_or_else(|| panic!("{q:?} must fail"));
        assert!(e.reason.contains(reason), "{q:?}: {e}");
        assert_eq!(e.pos, pos, "{q:?}: {e}");
    }
    assert!(Query::parse(&"x".repeat(MAX_QUERY_LEN + 1)).is_err());
    let deep = format!("{}properties.a:x{}", "(".repeat(40), ")".repeat(40));
    assert!(Query::parse(&deep)
        .expect_err("deep")
        .reason
        .contains("nesting"));
}

#[test]
fn label_mode_uses_label_fields() {
    let d = props(
        &[
            ("mode", "ranked"),
            ("geo.region", "eu"),
            (LABEL_KEY, "raw text"),
        ],
        &[("skill", 7.0)],
    );
    let label = |q: &str| {
        Query::parse_fields(q, Fields::Label)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&d)
    };
    assert!(label("+label.mode:ranked +label.skill:>=7"));
    assert!(label("label.geo.region:eu"));
    assert!(label("label:\"raw text\""));
    assert!(label("+label:raw* -label.mode:casual"));
    assert!(!label("label.mode:casual"));
    assert!(!label("label:raw"));
    // The bare field is the whole label only; `label.` alone is no key.
    for (q, pos, reason) in [
        (
            "properties.mode:ranked",
            0,
            "must be 'label' or 'label.<key>'",
        ),
        ("+label.:x", 1, "must be 'label' or 'label.<key>'"),
        ("labels:x", 0, "must be 'label' or 'label.<key>'"),
        ("mode:ranked", 0, "must be 'label' or 'label.<key>'"),
        (
            "label",
            0,
            "expected 'label.<key>:<value>' or 'label:<value>'",
        ),
        ("label.a:>x", 9, "not a number"),
    ] {
        let e = Query::parse_fields(q, Fields::Label)
            .err()
            .unwrap_or_else(|| panic!("{q:?} must fail"));
        assert!(e.reason.contains(reason), "{q:?}: {e}");
        assert_eq!(e.pos, pos, "{q:?}: {e}");
    }
    // Tickets keep their own fields and messages.
    for q in ["label.mode:ranked", "label:x"] {
        let e = Query::parse(q).expect_err(q);
        assert_eq!(
            e.reason,
            format!(
                "field {:?} must be 'properties.<key>'",
                &q[..q.find(':').unwrap_or(0)]
            )
        );
    }
    let e = Query::parse("ranked").expect_err("bare word");
    assert_eq!(
        e.reason,
        "expected 'properties.<key>:<value>', found \"ranked\""
    );
}

/// Asserts that `q` is rejected in `fields` mode at byte `pos` with a reason containing
/// `reason`.
fn rejected(q: &str, fields: Fields, pos: usize, reason: &str) {
    let e = Query::parse_fields(q, fields)
        .err()
        .unwrap_or_else(|| panic!("{q:?} must fail"));
    assert!(e.reason.contains(reason), "{q:?}: {e}");
    assert_eq!(e.pos, pos, "{q:?}: {e}");
}

#[test]
fn values_starting_with_plus_or_minus_word_are_rejected() {
    let plus = "cannot start with '+'";
    let minus = "only as a negative number";
    for (q, pos, reason) in [
        ("properties.skill:+10", 17, plus),
        ("properties.skill:+", 17, plus),
        ("properties.a:+foo", 13, plus),
        ("properties.a:+\"x\"", 13, plus),
        ("+properties.skill:+5", 18, plus),
        ("(properties.a:x OR properties.b:+1)", 32, plus),
        ("properties.a:-foo", 13, minus),
        ("properties.a:-", 13, minus),
        ("properties.a:-5x", 13, minus),
        ("properties.a:--5", 13, minus),
        ("properties.a:-.5", 13, minus),
        ("properties.a:-5*", 13, minus),
        ("properties.a:-foo~1", 13, minus),
        ("properties.a:-foo^2", 13, minus),
        ("+properties.a:x properties.b:-x*", 29, minus),
        ("-properties.a:-foo", 14, minus),
        // Comparisons never took a sign other than a number's '-'.
        ("properties.skill:>+5", 18, "not a number"),
        ("properties.skill:>-foo", 18, "not a number"),
    ] {
        rejected(q, Fields::Properties, pos, reason);
    }
    for (q, pos, reason) in [
        ("label:+x", 6, plus),
        ("label.a:-b", 8, minus),
        ("+label.skill:+1", 13, plus),
    ] {
        rejected(q, Fields::Label, pos, reason);
    }
    let e = Query::parse("properties.skill:+10").expect_err("plus");
    assert_eq!(
        e.to_string(),
        "query error at byte 17: a value cannot start with '+': write a number without it, \
         or quote (\"+x\") or escape (\\+x) text; a '+' that requires a term goes before \
         the field"
    );
    let e = Query::parse("properties.a:-foo").expect_err("minus");
    assert_eq!(
        e.to_string(),
        "query error at byte 13: a value can start with '-' only as a negative number, got \
         \"-foo\": quote (\"-x\") or escape (\\-x) text; a '-' that excludes a term goes \
         before the field"
    );
}

#[test]
fn negative_numbers_and_quoted_or_escaped_signs_still_work() {
    assert_eq!(hits("properties.skill:-5"), [3]);
    assert_eq!(hits("properties.skill:-5.0"), [3]);
    assert_eq!(hits("-properties.skill:-5"), [1, 2, 4]);
    assert_eq!(hits("+properties.skill:-5^2"), [3]);
    assert_eq!(hits("properties.skill:>-5"), [1, 2, 4]);
    assert_eq!(hits("properties.skill:>=-5"), [1, 2, 3, 4]);
    assert_eq!(hits("properties.skill:<= -5"), [3]);
    let d = props(
        &[("a", "+10"), ("b", "-foo"), ("c", "-5"), ("e", "a-b+c")],
        &[],
    );
    let on = |q: &str| {
        Query::parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&d)
    };
    assert!(on("properties.a:\"+10\""));
    assert!(on("properties.a:\\+10"));
    assert!(!on("properties.a:10"));
    assert!(on("properties.b:\"-foo\""));
    assert!(on("properties.b:\\-foo"));
    assert!(on("properties.b:\\-f*"));
    // A negative number also matches the string with the same text.
    assert!(on("properties.c:-5"));
    // Signs inside a value are plain text.
    assert!(on("properties.e:a-b+c"));
    assert!(on("properties.e:a-*"));
}

/// Date-valued documents: the instant each stands for is in the comment.
fn date_docs() -> Vec<Properties> {
    let date = |v: &str, mode: &str| props(&[("d", v), ("mode", mode)], &[]);
    vec![
        date("2023-12-31T23:59:59Z", "ranked"), // 1: 2023-12-31 23:59:59
        date("2024-01-01T00:00:00Z", "ranked"), // 2: 2024-01-01 00:00:00
        date("2024-01-01T02:00:00+02:00", "casual"), // 3: 2024-01-01 00:00:00
        date("2024-01-01T00:00:00.5Z", "ranked"), // 4: 2024-01-01 00:00:00.5
        date("2024-01-01T01:00:00+02:00", "casual"), // 5: 2023-12-31 23:00:00
        date("2023-12-31t20:00:00-05:00", "ranked"), // 6: 2024-01-01 01:00:00
        date("not a date", "ranked"),           // 7
        date("2024-01-01", "ranked"),           // 8: a date, but no time
        props(&[("mode", "ranked")], &[("d", 5.0)]), // 9: numeric
        props(&[("mode", "ranked")], &[]),      // 10: missing
        date("2024-01-01T00:00:00", "ranked"),  // 11: no offset
    ]
}

fn date_hits(q: &str) -> Vec<usize> {
    let q = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    date_docs()
        .iter()
        .enumerate()
        .filter(|(_, d)| q.matches(d))
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn date_comparisons_and_boundaries() {
    let midnight = "\"2024-01-01T00:00:00Z\"";
    assert_eq!(date_hits(&format!("properties.d:>{midnight}")), [4, 6]);
    assert_eq!(
        date_hits(&format!("properties.d:>={midnight}")),
        [2, 3, 4, 6]
    );
    assert_eq!(date_hits(&format!("properties.d:<{midnight}")), [1, 5]);
    assert_eq!(
        date_hits(&format!("properties.d:<={midnight}")),
        [1, 2, 3, 5]
    );
    assert_eq!(date_hits(&format!("properties.d:{midnight}")), [2, 3]);
    assert_eq!(
        date_hits(&format!("properties.d:>= {midnight}")),
        [2, 3, 4, 6]
    );
    // Nanosecond boundaries.
    assert_eq!(
        date_hits("properties.d:>\"2023-12-31T23:59:59.999999999Z\""),
        [2, 3, 4, 6]
    );
    assert_eq!(
        date_hits("properties.d:<\"2024-01-01T00:00:00.000000001Z\""),
        [1, 2, 3, 5]
    );
    assert_eq!(date_hits("properties.d:\"2024-01-01T00:00:00.500Z\""), [4]);
    assert_eq!(
        date_hits("properties.d:>=\"2024-01-01T00:00:00.5Z\""),
        [4, 6]
    );
    assert_eq!(date_hits("properties.d:>\"2024-01-01T00:00:00.5Z\""), [6]);
    // The query's offset is normalized too, in either case of 'T' and 'Z'.
    assert_eq!(
        date_hits("properties.d:\"2024-01-01T03:00:00+03:00\""),
        [2, 3]
    );
    assert_eq!(
        date_hits("properties.d:\"2023-12-31T14:00:00-10:00\""),
        [2, 3]
    );
    assert_eq!(date_hits("properties.d:\"2024-01-01t00:00:00z\""), [2, 3]);
    assert_eq!(
        date_hits("properties.d:\"2024-01-01T00:00:00-00:00\""),
        [2, 3]
    );
    assert_eq!(date_hits("properties.d:\"2024-01-01T01:00:00Z\""), [6]);
    assert_eq!(date_hits("properties.d:\"2023-12-31T23:00:00Z\""), [5]);
    assert_eq!(date_hits("properties.d:<=\"2023-12-31T23:00:00Z\""), [5]);
    assert_eq!(
        date_hits("properties.d:<\"2023-12-31T23:00:00Z\""),
        Vec::<usize>::new()
    );
    // Non-dates (text, a bare day, no offset, a number, nothing) never match a date
    // term, so excluding one keeps them.
    assert_eq!(
        date_hits(&format!("-properties.d:>={midnight}")),
        [1, 5, 7, 8, 9, 10, 11]
    );
    assert_eq!(
        date_hits("properties.d:>\"1970-01-01T00:00:00Z\""),
        [1, 2, 3, 4, 5, 6]
    );
    // Numeric comparisons still look at numbers only.
    assert_eq!(date_hits("properties.d:>0"), [9]);
    // A quoted non-date is still the exact text.
    assert_eq!(date_hits("properties.d:\"2024-01-01\""), [8]);
    assert_eq!(date_hits("properties.d:\"2024-01-01T00:00:00\""), [11]);
    // Unquoted, a date is plain text (exact, or a wildcard).
    assert_eq!(date_hits("properties.d:2024-01-01T00:00:00Z"), [2]);
    assert_eq!(date_hits("properties.d:2024-01-01T*"), [2, 3, 4, 5, 11]);
}

#[test]
fn date_terms_mix_with_other_terms() {
    let q = "+properties.mode:ranked +properties.d:>=\"2024-01-01T00:00:00Z\"";
    assert_eq!(date_hits(q), [2, 4, 6]);
    let q = "+properties.mode:ranked +properties.d:>=\"2024-01-01T00:00:00Z\" \
             -properties.d:\"2024-01-01T00:00:00.5Z\"";
    assert_eq!(date_hits(q), [2, 6]);
    let between = "properties.d:>=\"2024-01-01T00:00:00Z\" AND \
                   properties.d:<\"2024-01-01T01:00:00Z\"";
    assert_eq!(date_hits(between), [2, 3, 4]);
    assert_eq!(
        date_hits(&format!("NOT ({between})")),
        [1, 5, 6, 7, 8, 9, 10, 11]
    );
    let either = "properties.d:<\"2023-12-31T23:30:00Z\" || \
                  properties.d:>\"2024-01-01T00:30:00+00:00\"";
    assert_eq!(date_hits(either), [5, 6]);
    assert_eq!(
        date_hits("properties.mode:casual properties.d:>\"2024-01-01T00:00:00Z\""),
        [3, 4, 5, 6]
    );
    // Boosts rank; the date phrase is no index term (equal instants differ in text),
    // but scores stay constant without optional terms.
    let d = date_docs();
    let q = Query::parse("+properties.mode:ranked properties.d:>\"2024-01-01T00:00:00Z\"^3")
        .expect("parse");
    assert_eq!(q.score(&d[3]), Some(4.0));
    assert_eq!(q.score(&d[1]), Some(1.0));
    assert_eq!(q.score(&d[2]), None);
    let q = Query::parse("+properties.d:\"2024-01-01T00:00:00Z\" +properties.mode:ranked")
        .expect("parse");
    assert_eq!(q.required_terms(), vec![("mode", "ranked")]);
    assert!(q.is_constant_score());
    assert!(q.matches(&d[1]) && !q.matches(&d[2]));
    let q = Query::parse("+properties.d:\"2024-01-01\"").expect("parse");
    assert_eq!(q.required_terms(), vec![("d", "2024-01-01")]);
}

#[test]
fn date_calendar_and_shape() {
    let d = |v: &str| props(&[("d", v)], &[]);
    let is = |v: &str, q: &str| {
        Query::parse(&format!("properties.d:{q}"))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&d(v))
    };
    let epoch = ">=\"1970-01-01T00:00:00Z\"";
    assert!(is("2024-02-29T12:00:00Z", epoch));
    assert!(!is("2023-02-29T12:00:00Z", epoch));
    assert!(!is("2024-04-31T00:00:00Z", epoch));
    assert!(!is("2024-01-01T24:00:00Z", epoch));
    assert!(!is("2024-01-01T00:00:00+24:00", epoch));
    assert!(!is("2024-01-01T00:00:00+02:60", epoch));
    assert!(!is("2024-01-01T00:00:00+0200", epoch));
    assert!(!is("2024-01-01T00:00:00.Z", epoch));
    assert!(!is("2024-01-01T00:00:00ZZ", epoch));
    assert!(!is("2024-01-01T00:00:00Z ", epoch));
    assert!(!is("2024-01-01 00:00:00Z", epoch));
    assert!(!is("2024-1-01T00:00:00Z", epoch));
    assert!(!is("２０２４-01-01T00:00:00Z", epoch));
    assert!(!is("2024-01-01T00:00:00Zé", epoch));
    assert!(!is("1969-12-31T23:59:59Z", "<\"2024-01-01T00:00:00Z\""));
    // An offset may carry an instant just before the epoch or near the end of 9999.
    assert!(is("1970-01-01T00:30:00+01:00", "<\"1970-01-01T00:00:00Z\""));
    assert!(is(
        "9999-12-31T23:59:59.999999999-23:59",
        ">\"9999-12-31T23:59:59Z\""
    ));
    assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_date("1970-01-01T00:00:00+01:00"),
        Some(-3_600_000_000_000)
    );
    assert_eq!(
        parse_date("2024-01-01T00:00:00Z"),
        Some(1_704_067_200_000_000_000)
    );
    assert_eq!(
        parse_date("2024-01-01T05:30:00.25+05:30"),
        Some(1_704_067_200_250_000_000)
    );
    // Digits past nanoseconds are dropped.
    assert_eq!(
        parse_date("1970-01-01T00:00:00.1234567899Z"),
        Some(123_456_789)
    );
}

#[test]
fn bad_date_terms_say_where_and_why() {
    let not_date = "is not an RFC 3339 date";
    for (q, pos, reason) in [
        ("properties.d:>\"soon\"", 14, not_date),
        ("properties.d:>= \"2024-13-01T00:00:00Z\"", 16, not_date),
        ("properties.d:<\"2024-01-01\"", 14, not_date),
        ("properties.d:<=\"2024-01-01T00:00:00\"", 15, not_date),
        ("properties.d:>\"2023-02-29T00:00:00Z\"", 14, not_date),
        ("properties.d:>\"\"", 14, not_date),
        ("+properties.a:x properties.d:<\"x\"", 30, not_date),
        ("properties.d:>2024-01-01T00:00:00Z", 14, "quote a date"),
        ("properties.d:>\"2024-01-01T00:00:00Z", 14, "unterminated"),
        (
            "properties.d:>",
            13,
            "a comparison needs a number or a quoted date",
        ),
        ("properties.d:>\"2024-01-01T00:00:00Z\"~1", 36, "phrases"),
    ] {
        rejected(q, Fields::Properties, pos, reason);
    }
    rejected("label.d:<\"x\"", Fields::Label, 9, not_date);
    let e = Query::parse("properties.d:>\"soon\"").expect_err("soon");
    assert_eq!(
        e.to_string(),
        "query error at byte 14: \"soon\" is not an RFC 3339 date (like \
         \"2024-01-01T00:00:00Z\"); a comparison takes a number or a quoted date"
    );
    let e = Query::parse("properties.d:>2024-01-01T00:00:00Z").expect_err("unquoted");
    assert_eq!(
        e.reason,
        "\"2024-01-01T00:00:00Z\" is not a number; quote a date: \"2024-01-01T00:00:00Z\""
    );
}

#[test]
fn label_mode_dates() {
    let d = props(
        &[
            ("d", "2024-06-01T12:00:00+02:00"),
            (LABEL_KEY, "2024-06-01T10:00:00Z"),
        ],
        &[],
    );
    let label = |q: &str| {
        Query::parse_fields(q, Fields::Label)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&d)
    };
    assert!(label("label.d:>\"2024-06-01T09:59:59Z\""));
    assert!(label("label.d:>=\"2024-06-01T10:00:00Z\""));
    assert!(!label("label.d:>\"2024-06-01T10:00:00Z\""));
    assert!(label("label.d:<=\"2024-06-01T10:00:00Z\""));
    assert!(!label("label.d:<\"2024-06-01T10:00:00Z\""));
    assert!(label("label.d:\"2024-06-01T10:00:00Z\""));
    assert!(label("label:\"2024-06-01T12:00:00+02:00\""));
    assert!(label(
        "+label:>=\"2024-06-01T00:00:00Z\" +label.d:<\"2024-06-02T00:00:00Z\""
    ));
    assert!(!label("label.x:>\"2024-06-01T00:00:00Z\""));
}

mod props_test {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The instant `secs.nanos` after the epoch, written with an offset of `offset`
    /// minutes.
    fn at(secs: u64, nanos: u32, offset: i64) -> String {
        let local = secs.saturating_add_signed(offset * 60);
        let text =
            humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::new(local, nanos)).to_string();
        let sign = if offset < 0 { '-' } else { '+' };
        let m = offset.unsigned_abs();
        format!(
            "{}{sign}{:02}:{:02}",
            text.trim_end_matches('Z'),
            m / 60,
            m % 60
        )
    }

    proptest! {
        #[test]
        fn arbitrary_queries_never_panic(q in ".{0,200}") {
            if let Ok(query) = Query::parse(&q) {
                for d in docs() {
                    let _ = query.score(&d);
                }
            }
        }

        #[test]
        fn exact_terms_match_their_own_value(key in "[a-z]{1,8}", value in "[a-zA-Z0-9_.-]{1,16}") {
            let q = Query::parse(&format!("+properties.{key}:\"{value}\"")).expect("parse");
            let d = Properties { strings: [(key.clone(), value.clone())].into(), numbers: BTreeMap::new() };
            prop_assert!(q.matches(&d));
            let other = Properties { strings: [(key, format!("{value}x"))].into(), numbers: BTreeMap::new() };
            prop_assert!(!q.matches(&other));
        }

        #[test]
        fn dates_compare_by_instant(
            secs in 86_400u64..253_402_300_799 - 86_400,
            delta in -1i64..=1,
            (nanos_a, nanos_b) in (0usize..3, 0usize..3),
            (off_a, off_b) in (-1439i64..=1439, -1439i64..=1439),
        ) {
            const NANOS: [u32; 3] = [0, 1, 999_999_999];
            let (na, nb) = (NANOS[nanos_a], NANOS[nanos_b]);
            let secs_b = secs.saturating_add_signed(delta);
            let a = at(secs, na, off_a);
            let b = at(secs_b, nb, off_b);
            let d = Properties { strings: [("d".to_owned(), a.clone())].into(), numbers: BTreeMap::new() };
            let (x, y) = ((secs, na), (secs_b, nb));
            for (op, expect) in [("", x == y), (">", x > y), (">=", x >= y), ("<", x < y), ("<=", x <= y)] {
                let q = Query::parse(&format!("properties.d:{op}\"{b}\"")).expect("parse");
                prop_assert_eq!(q.matches(&d), expect, "{} {}{}", a, op, b);
            }
        }

        #[test]
        fn ranges_agree_with_comparisons(bound in -1000i32..1000, value in -1000i32..1000) {
            let d = Properties { strings: BTreeMap::new(), numbers: [("n".to_owned(), f64::from(value))].into() };
            for (op, expect) in [(">", value > bound), (">=", value >= bound), ("<", value < bound), ("<=", value <= bound)] {
                let q = Query::parse(&format!("properties.n:{op}{bound}")).expect("parse");
                prop_assert_eq!(q.matches(&d), expect, "{} {}", op, bound);
            }
        }
    }
}
