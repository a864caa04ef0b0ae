//! Unit tests of incident parsing and validation: rejections name their field and say what is wrong,
//! every limit holds at its edge. Kept apart so `mod.rs` reads as the code alone.

use super::*;

fn rejected(json: &str) -> Rejection {
    parse(json.as_bytes()).expect_err("should be rejected").0
}

#[test]
fn seed_incident_with_single_service_parses() {
    let i = parse(
        br#"{"id":"INC001","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api-server",
            "context":{"pod_name":"api-server-abc123","namespace":"production"}}"#,
    )
    .unwrap();
    assert_eq!(i.services, vec!["api-server"]);
    assert_eq!(i.service(), "api-server");
    assert_eq!(i.context["pod_name"], ContextValue::Str("api-server-abc123".into()));
}

#[test]
fn rejections_name_the_field() {
    let cases = [
        (r#"{"root_cause":"x","confidence":1,"service":"a"}"#, "id"),
        (r#"{"id":"","root_cause":"x","confidence":1,"service":"a"}"#, "id"),
        (r#"{"id":5,"root_cause":"x","confidence":1,"service":"a"}"#, "id"),
        (r#"{"id":"a","confidence":1,"service":"a"}"#, "root_cause"),
        (
            r#"{"id":"a","root_cause":"x","confidence":1.5,"service":"a"}"#,
            "confidence",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":"high","service":"a"}"#,
            "confidence",
        ),
        (r#"{"id":"a","root_cause":"x","confidence":0.5}"#, "services"),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":[]}"#,
            "services",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a",3]}"#,
            "services[1]",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"n":null}}"#,
            "context.n",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":[]}"#,
            "context",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","detected_at":"yesterday"}"#,
            "detected_at",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a"],"service":"b"}"#,
            "service",
        ),
        (r#"[1,2]"#, "$"),
        (r#"{"id":"a""#, "$"),
    ];
    for (json, field) in cases {
        assert_eq!(rejected(json).field, field, "{json}");
    }
}

#[test]
fn oversized_payload_is_rejected_before_parsing() {
    let big = vec![b' '; MAX_INCIDENT_BYTES + 1];
    assert_eq!(parse(&big).unwrap_err().0.field, "$");
}

/// Every size limit of the incident contract (schemas/incident.v1.json) at its edge and one
/// past it, with the numbers written out: a change to a limit is a change to the contract.
#[test]
fn every_limit_holds_at_its_edge_and_one_past_it() {
    let with = |extra: &str| format!(r#"{{"id":"a","root_cause":"x","confidence":0.5,"service":"a"{extra}}}"#);
    // The whole payload: 256 KiB accepted (padded with whitespace), one byte more rejected.
    let base = with("");
    let mut padded = base.clone().into_bytes();
    padded.resize(262_144, b' ');
    assert!(parse(&padded).is_ok(), "262144 bytes are accepted");
    padded.push(b' ');
    let (r, _) = parse(&padded).unwrap_err();
    assert_eq!(r.field, "$");
    assert_eq!(r.message, "payload of 262145 bytes exceeds the 262144-byte limit");
    // id: 128 characters.
    let id = |n: usize| {
        format!(
            r#"{{"id":"{}","root_cause":"x","confidence":0.5,"service":"a"}}"#,
            "é".repeat(n)
        )
    };
    assert!(parse(id(128).as_bytes()).is_ok());
    assert_eq!(rejected(&id(129)).field, "id");
    // Free text (root cause, service, context values): 1024 characters.
    let rc = |n: usize| {
        format!(
            r#"{{"id":"a","root_cause":"{}","confidence":0.5,"service":"a"}}"#,
            "é".repeat(n)
        )
    };
    assert!(parse(rc(1024).as_bytes()).is_ok());
    assert_eq!(rejected(&rc(1025)).field, "root_cause");
    let ctx_value = |n: usize| with(&format!(r#","context":{{"k":"{}"}}"#, "é".repeat(n)));
    assert!(parse(ctx_value(1024).as_bytes()).is_ok());
    let r = rejected(&ctx_value(1025));
    assert_eq!(
        (r.field.as_str(), r.message.as_str()),
        ("context.k", "must be at most 1024 characters, got 1025")
    );
    // Context keys: 128 characters.
    let ctx_key = |n: usize| with(&format!(r#","context":{{"{}":"v"}}"#, "k".repeat(n)));
    assert!(parse(ctx_key(128).as_bytes()).is_ok());
    assert!(rejected(&ctx_key(129)).field.starts_with("context.kkk"));
    // Lists and maps: 64 entries.
    let entries = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",");
    assert_eq!(
        parse(with(&format!(r#","context":{{{}}}"#, entries(64))).as_bytes())
            .unwrap()
            .context
            .len(),
        64
    );
    let r = rejected(&with(&format!(r#","context":{{{}}}"#, entries(65))));
    assert_eq!(
        (r.field.as_str(), r.message.as_str()),
        ("context", "has 65 entries, at most 64 allowed")
    );
    let items = |n: usize| (0..n).map(|i| format!(r#""s{i}""#)).collect::<Vec<_>>().join(",");
    assert_eq!(
        parse(with(&format!(r#","symptoms":[{}]"#, items(64))).as_bytes())
            .unwrap()
            .symptoms
            .len(),
        64
    );
    let r = rejected(&with(&format!(r#","symptoms":[{}]"#, items(65))));
    assert_eq!(
        (r.field.as_str(), r.message.as_str()),
        ("symptoms", "has 65 items, at most 64 allowed")
    );
    let services = |n: usize| {
        format!(
            r#"{{"id":"a","root_cause":"x","confidence":0.5,"services":[{}]}}"#,
            items(n)
        )
    };
    assert_eq!(parse(services(64).as_bytes()).unwrap().services.len(), 64);
    assert_eq!(rejected(&services(65)).field, "services");
}

/// Each rejection names the field and says what is wrong, word for word.
#[test]
fn rejections_say_what_is_wrong_word_for_word() {
    let cases = [
        (
            r#"{"id":"","root_cause":"x","confidence":0.5,"service":"a"}"#,
            "id",
            "must not be empty",
        ),
        (
            r#"{"id":"a\u0001","root_cause":"x","confidence":0.5,"service":"a"}"#,
            "id",
            "must not contain control characters",
        ),
        (
            r#"{"id":7,"root_cause":"x","confidence":0.5,"service":"a"}"#,
            "id",
            "must be a string, got number",
        ),
        (
            r#"{"root_cause":"x","confidence":0.5,"service":"a"}"#,
            "id",
            "is required",
        ),
        (
            r#"{"id":"a","root_cause":null,"confidence":0.5,"service":"a"}"#,
            "root_cause",
            "is required",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":"a"}"#,
            "services",
            "must be an array of strings, got string",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":[]}"#,
            "services",
            "must list at least one service",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a"],"service":"b"}"#,
            "service",
            r#""b" disagrees with services[0] "a""#,
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a",true]}"#,
            "services[1]",
            "must be a string, got boolean",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":{}}}"#,
            "context.k",
            "must be a string, number or boolean, got object",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":[1]}}"#,
            "context.k",
            "must be a string, number or boolean, got array",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":null}}"#,
            "context.k",
            "must be a string, number or boolean, got null",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":[]}"#,
            "context",
            "must be an object, got array",
        ),
    ];
    for (json, field, message) in cases {
        let r = rejected(json);
        assert_eq!((r.field.as_str(), r.message.as_str()), (field, message), "{json}");
    }
    // At the length limit exactly (128 characters), a control character is the problem, not the
    // length.
    let at_limit = format!(
        r#"{{"id":"{}\u0001","root_cause":"x","confidence":0.5,"service":"a"}}"#,
        "i".repeat(127)
    );
    let r = rejected(&at_limit);
    assert_eq!(
        (r.field.as_str(), r.message.as_str()),
        ("id", "must not contain control characters")
    );
    // A services list, or a single service, agreeing with its first entry.
    let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a","b"],"service":"a"}"#).unwrap();
    assert_eq!((i.service(), i.services.len()), ("a", 2));
    // Context values keep their JSON text.
    let i = parse(
        br#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"n":3,"f":0.25,"b":false,"s":"v"}}"#,
    )
    .unwrap();
    let shown: Vec<String> = i.context.values().map(ToString::to_string).collect();
    assert_eq!(shown, ["false", "0.25", "3", "v"]);
}

/// What a rejected incident still tells (for the outcome and the dead-letter headers): its id
/// and service when they are themselves valid, never an invalid one.
#[test]
fn a_rejection_keeps_only_valid_identity() {
    let partial = |json: &str| parse(json.as_bytes()).unwrap_err().1;
    let p = partial(r#"{"id":"INC1","root_cause":"OOM","confidence":2,"services":["api","web"],"service":"x"}"#);
    assert_eq!(
        (p.id.as_deref(), p.service.as_deref(), p.root_cause.as_deref()),
        (Some("INC1"), Some("api"), Some("OOM"))
    );
    let p = partial(r#"{"id":"INC1","root_cause":"OOM","confidence":2,"service":"web"}"#);
    assert_eq!(p.service.as_deref(), Some("web"));
    let long = "x".repeat(129);
    let p = partial(&format!(
        r#"{{"id":"{long}","root_cause":"","confidence":2,"services":[""],"service":"a\u0002"}}"#
    ));
    assert_eq!((p.id, p.service, p.root_cause), (None, None, None));
    assert_eq!(shorten(&"s".repeat(64)), "s".repeat(64));
    assert_eq!(shorten(&"s".repeat(65)), format!("{}…", "s".repeat(64)));
}

/// `null` means absent, for every optional field: `services: null` falls back to `service`,
/// and with neither the incident is rejected naming `services`.
#[test]
fn null_means_absent() {
    let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":null,"service":"api","symptoms":null,"context":null}"#).unwrap();
    assert_eq!(i.services, vec!["api".to_string()]);
    assert!(i.symptoms.is_empty() && i.context.is_empty());
    for json in [
        r#"{"id":"a","root_cause":"x","confidence":0.5,"services":null}"#,
        r#"{"id":"a","root_cause":"x","confidence":0.5,"services":null,"service":null}"#,
        r#"{"id":"a","root_cause":"x","confidence":0.5}"#,
    ] {
        let r = rejected(json);
        assert_eq!(
            (r.field.as_str(), r.message.as_str()),
            ("services", "is required (or give a single `service`)"),
            "{json}"
        );
    }
    // An explicit list wins over a null single service.
    let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":["web"],"service":null}"#).unwrap();
    assert_eq!(i.services, vec!["web".to_string()]);
}

#[test]
fn partial_keeps_the_id_of_a_rejected_incident() {
    let (_, p) = parse(br#"{"id":"INC9","root_cause":"x","confidence":7,"services":["svc"]}"#).unwrap_err();
    assert_eq!(p.id.as_deref(), Some("INC9"));
    assert_eq!(p.service.as_deref(), Some("svc"));
}

#[test]
fn repeated_keys_are_rejected_with_their_path() {
    // Last-wins would act on 0.95; a first-wins reader upstream saw 0.1.
    let cases = [
        (
            r#"{"id":"a","root_cause":"x","confidence":0.1,"confidence":0.95,"service":"a"}"#,
            "confidence",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.9,"service":"a","context":{"pod_name":"p","pod_name":"q"}}"#,
            "context.pod_name",
        ),
        (
            r#"{"id":"a","root_cause":"x","confidence":0.9,"services":["a"],"extra":[{"k":1},{"k":1,"k":2}]}"#,
            "extra[1].k",
        ),
        // Found by `cargo fuzz` (fuzz/fuzz_targets/incident_parse.rs): an empty key repeated.
        (r#"{"kd":"Iffk","":0.95,"skd":"Iffk","":0.95,"ervice":"er"}"#, r#""""#),
        (r#"{"id":"a","context":{"":1,"":2}}"#, r#"context."""#),
        (r#"{"id":"a","x":[[1,{"k":1}],[{"k":1,"k":2}]]}"#, "x[1][0].k"),
        (
            r#"{"id":"a","context":{"deep":{"er":{"k":1,"k":2}}}}"#,
            "context.deep.er.k",
        ),
        (r#"{"id":"a","x":[{"k":1},{"j":[{"k":1}],"k":2,"k":3}]}"#, "x[1].k"),
    ];
    for (json, field) in cases {
        let r = rejected(json);
        assert_eq!(r.field, field, "{json}");
        assert!(r.message.contains("more than once"), "{r}");
    }
    let (r, p) = parse(br#"{"id":"a","id":"b","root_cause":"x","confidence":0.9,"service":"s"}"#).unwrap_err();
    assert_eq!(r.field, "id");
    assert_eq!(p.id, None, "an ambiguous id names no incident");
    // Long keys are shortened in the path, as everywhere a value is named.
    let long = "k".repeat(70);
    let r = rejected(&format!(r#"{{"id":"a","{long}":{{"{long}":1,"{long}":2}}}}"#));
    assert_eq!(r.field, format!("{0}….{0}…", "k".repeat(64)));
    // A repeated key is noticed when it is read, before its value (which repeats one too).
    assert_eq!(rejected(r#"{"id":"a","k":1,"k":{"a":1,"a":2}}"#).field, "k");
    // Invalid JSON is invalid JSON, whatever it repeated before the error.
    let r = rejected(r#"{"id":"a","id":"b","confidence":}"#);
    assert_eq!(r.field, "$");
    assert!(r.message.contains("not valid JSON"), "{r}");
    // The same key in different objects is not a repetition.
    parse(br#"{"id":"a","root_cause":"x","confidence":0.9,"service":"s","context":{"id":"b"}}"#).unwrap();
}

#[test]
fn too_long_id_is_rejected() {
    let json = format!(
        r#"{{"id":"{}","root_cause":"x","confidence":0.5,"service":"a"}}"#,
        "x".repeat(129)
    );
    let r = rejected(&json);
    assert_eq!(r.field, "id");
    assert!(r.message.contains("at most 128"), "{r}");
}

#[test]
fn context_strings_say_what_is_wrong_with_them() {
    let r = rejected(r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"pod_name":"p\u0007"}}"#);
    assert_eq!(r.field, "context.pod_name");
    assert!(r.message.contains("control characters"), "{r}");
    let long = format!(
        r#"{{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{{"k":"{}"}}}}"#,
        "y".repeat(MAX_TEXT_CHARS + 1)
    );
    let r = rejected(&long);
    assert_eq!(r.field, "context.k");
    assert!(r.message.contains(&format!("got {}", MAX_TEXT_CHARS + 1)), "{r}");
}

#[test]
fn the_document_is_read_as_serde_json_reads_it() {
    // One pass builds the value and looks for repeated keys; the value is serde_json's own,
    // repeated keys included (the last one wins), so nothing downstream sees a difference.
    let docs = [
        r#"{"id":"a","root_cause":"x","confidence":0.95,"service":"s","context":{"n":3,"f":-2.5e3,"b":true,"z":null}}"#,
        r#"{"a":[1,[2,{"b":[]}],{}],"u":18446744073709551615,"i":-9223372036854775808,"s":"\u00e9\n"}"#,
        r#"{"k":1,"k":2,"o":{"x":"first","x":"last"}}"#,
        r#"[1,2,{"a":1}]"#,
        r#""just a string""#,
        "  { \"spaced\" : [ 1 , 2 ] }  ",
    ];
    for doc in docs {
        let (value, _) = read_document(doc.as_bytes()).expect(doc);
        let theirs: Value = serde_json::from_slice(doc.as_bytes()).expect(doc);
        assert_eq!(value, theirs, "{doc}");
    }
    for bad in [r#"{"a":1} x"#, r#"{"a":1,}"#, "", r#"{"a":01}"#] {
        assert!(read_document(bad.as_bytes()).is_err(), "{bad}");
        assert!(serde_json::from_slice::<Value>(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    // The one-pass reader recurses per level; serde_json's depth limit (128) stops it long
    // before the stack would, for arrays and objects alike, within the size limit.
    for (open, close) in [("[", "]"), (r#"{"k":"#, "}")] {
        let depth = 40_000;
        let doc = format!(
            r#"{{"id":"a","root_cause":"x","confidence":0.5,"service":"s","deep":{}1{}}}"#,
            open.repeat(depth),
            close.repeat(depth)
        );
        assert!(doc.len() <= MAX_INCIDENT_BYTES, "{}", doc.len());
        let r = rejected(&doc);
        assert_eq!(r.field, "$");
        assert!(r.message.contains("recursion limit"), "{r}");
    }
}
