use serde_json::json;

use super::*;

fn scope(payload: &str) -> Scope {
    let mut responses = Responses::default();
    responses.insert(
        "score",
        KeptResponse {
            status: 200,
            headers: [("x-trace".to_string(), "t1".to_string())].into(),
            body: r#"{"score": 72, "tier": "gold"}"#.to_string(),
        },
    );
    Scope::new(
        payload,
        JobFacts {
            id: "j1",
            key: "k1",
            flow: "leads",
            priority: 5,
            created_at: Timestamp::from_second(1_800_000_000).unwrap(),
        },
        &responses,
    )
}

#[test]
fn conditions_read_the_payload_and_a_missing_field_is_false() {
    let s = scope(r#"{"amount": 12000, "vip": true}"#);
    let holds = |src: &str| Expr::condition(src).unwrap().holds(&s).unwrap();
    assert!(holds("payload.amount >= 10000"));
    assert!(!holds("payload.amount < 10000"));
    assert!(holds("payload.vip"));
    assert!(!holds("payload.missing"));
    assert!(holds("steps.score.response.json.score > 50"));
    assert!(holds("job.priority == 5 and job.flow == 'leads'"));
}

#[test]
fn a_missing_field_compared_fails_and_says_how_to_allow_it() {
    let s = scope(r#"{"email": "a@b.c"}"#);
    let error = Expr::condition("payload.amount >= 10000")
        .unwrap()
        .holds(&s)
        .unwrap_err();
    assert_eq!(error.expression, "payload.amount >= 10000");
    assert!(
        error.message.contains("missing") && error.message.contains("| default("),
        "{error}"
    );
    let allowed = Expr::condition("payload.amount | default(0) >= 10000").unwrap();
    assert_eq!(allowed.holds(&s), Ok(false));
}

#[test]
fn a_lone_expression_keeps_its_json_type_and_text_renders() {
    let s = scope(r#"{"email": "a@b.c", "amount": 12000.5, "tags": ["x"]}"#);
    let shape = json!({
        "email": "{{ payload.email }}",
        "amount": "{{ payload.amount }}",
        "score": "{{ steps.score.response.json.score }}",
        "note": "lead {{ job.key }} scored {{ steps.score.response.json.score }}",
        "tags": "{{ payload.tags }}",
        "fixed": {"source": "steadfast", "n": 1},
        "list": ["{{ steps.score.response.status }}", 2],
    });
    let body = Mapping::compile(&shape).unwrap().build(&s).unwrap();
    assert_eq!(
        body,
        json!({
            "email": "a@b.c",
            "amount": 12000.5,
            "score": 72,
            "note": "lead k1 scored 72",
            "tags": ["x"],
            "fixed": {"source": "steadfast", "n": 1},
            "list": [200, 2],
        })
    );
    let whole = Mapping::compile(&json!("{{ payload }}")).unwrap();
    assert_eq!(
        whole.build(&s).unwrap(),
        json!({"email": "a@b.c", "amount": 12000.5, "tags": ["x"]})
    );
}

#[test]
fn a_missing_field_in_a_body_fails_naming_the_expression() {
    let s = scope(r#"{"email": "a@b.c"}"#);
    let mapping = Mapping::compile(&json!({"phone": "{{ payload.phone.number }}"})).unwrap();
    let error = mapping.build(&s).unwrap_err();
    assert_eq!(error.expression, "payload.phone.number");
    assert!(error.message.contains("undefined"), "{}", error.message);
    let printed = Mapping::compile(&json!({"p": "call {{ payload.phone }}"})).unwrap();
    assert!(printed.build(&s).is_err(), "printing undefined fails");
    let alone = Mapping::compile(&json!({"p": "{{ payload.phone }}"})).unwrap();
    let error = alone.build(&s).unwrap_err();
    assert_eq!(error.expression, "payload.phone");
    // A default makes a field optional.
    let optional = Mapping::compile(&json!({"p": "{{ payload.phone | default(none) }}"})).unwrap();
    assert_eq!(optional.build(&s).unwrap(), json!({"p": null}));
}

#[test]
fn syntax_errors_are_reported_with_their_place() {
    assert!(Expr::condition("payload.amount >=").is_err());
    assert!(Expr::condition("payload.amount %} x").is_err());
    let errors = Mapping::compile(&json!({"a": {"b": ["ok", "{{ payload. }}"]}})).unwrap_err();
    assert_eq!(
        errors[0].path,
        [
            PathPart::Key("a".into()),
            PathPart::Key("b".into()),
            PathPart::Index(1)
        ]
    );
}

#[test]
fn expressions_list_what_they_read() {
    let expr = Expr::value("steps.score.response.json.score + payload.n").unwrap();
    assert_eq!(
        expr.variables(),
        ["payload.n", "steps.score.response.json.score"]
    );
    assert_eq!(expr.steps_read().collect::<Vec<_>>(), ["score"]);
    let text = Expr::text("{{ job.key }} / {{ steps.a.response.body }}").unwrap();
    assert_eq!(text.steps_read().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn runaway_expressions_run_out_of_fuel() {
    let s = scope("{}");
    // As a body renders it, the only way a text template runs.
    let mapping =
        Mapping::compile(&json!({"t": "{% for i in range(100000) %}{{ i }}{% endfor %}"})).unwrap();
    let error = mapping.render(&s).unwrap_err();
    assert!(error.message.contains("fuel"), "{}", error.message);
}

#[test]
fn responses_round_trip_through_the_log_text() {
    let mut responses = Responses::default();
    responses.insert(
        "score",
        KeptResponse::new(
            201,
            &[("content-type".into(), "application/json".into())],
            &"é".repeat(40_000),
        ),
    );
    assert_eq!(responses.get("score").unwrap().status, 201);
    let back = Responses::from_log(Some(&responses.to_log()));
    assert_eq!(back, responses);
    assert!(Responses::from_log(Some("not json")).is_empty());
    assert!(Responses::from_log(None).is_empty());
}

#[test]
fn the_failing_expression_of_a_body_is_named_among_several() {
    let s = scope(r#"{"a": 1, "c": {"d": 2}}"#);
    let mapping = Mapping::compile(&json!({
        "first": "{{ payload.a }}",
        "second": "text\nover lines {{ payload.b.c }}\nand more",
        "third": ["{{ payload.c.d }}", "{{ payload.c.e }}"],
    }))
    .unwrap();
    let error = mapping.render(&s).unwrap_err();
    assert_eq!(
        error.expression,
        "text\nover lines {{ payload.b.c }}\nand more"
    );
    let mapping =
        Mapping::compile(&json!({"third": ["{{ payload.c.d }}", "{{ payload.c.e }}"]})).unwrap();
    assert_eq!(mapping.render(&s).unwrap_err().expression, "payload.c.e");
}

#[test]
fn literal_keys_and_values_that_look_like_templates_are_sent_as_written() {
    let s = scope(r#"{"a": 1}"#);
    let mapping = Mapping::compile(&json!({
        "{{ not a template }}": "{{ payload.a }}",
        "quote\"d": ["x", 2.5, null, true],
    }))
    .unwrap();
    assert_eq!(
        mapping.build(&s).unwrap(),
        json!({"{{ not a template }}": 1, "quote\"d": ["x", 2.5, null, true]})
    );
    // Text rendered into a string is escaped as JSON.
    let text = Mapping::compile(&json!({"t": "say \"{{ payload.a }}\"\n"})).unwrap();
    assert_eq!(text.render(&s).unwrap(), r#"{"t":"say \"1\"\n"}"#);
}

/// Payloads of every JSON type, odd bytes and missing fields, for the
/// checks that the short way and MiniJinja agree.
const PAYLOADS: [&str; 10] = [
    r#"{"n": 12345, "email": "a@b.c", "vip": true, "tier": "gold"}"#,
    r#"{"n": -7, "email": "quote \" back \\ slash </script> é 🦀", "vip": false}"#,
    r#"{"n": 12.5, "email": null, "vip": "yes"}"#,
    r#"{"n": 18446744073709551615, "email": 5, "vip": 0}"#,
    r#"{"n": "10000", "email": ["x"], "tier": {"a": 1}}"#,
    r#"{"n": 0, "email": "", "vip": null}"#,
    r#"{"email": "only"}"#,
    r#"{}"#,
    r#"[1, 2]"#,
    r#"not json"#,
];

#[test]
fn the_short_way_and_minijinja_agree_on_every_condition() {
    let conditions = [
        "payload.n >= 10000",
        "payload.n < 0",
        "payload.n == 12345",
        "payload.n != 0",
        "payload.n > -8",
        "payload.n <= 12.5",
        "payload.tier == 'gold'",
        "payload.tier != \"gold\"",
        "payload.email == 'a@b.c'",
        "payload.vip",
        "payload.missing",
        "payload.missing > 1",
        "steps.score.response.json.score > 50",
        "steps.score.response.status == 200",
        "job.priority >= 5",
        "job.flow == 'leads'",
        "payload.n >= 0 and payload.vip",
        "payload.email == 'a==b'",
    ];
    for source in conditions {
        let expr = Expr::condition(source).unwrap();
        for payload in PAYLOADS {
            let s = scope(payload);
            assert_eq!(
                expr.holds(&s),
                expr.holds_by_template(&s),
                "`{source}` on {payload}"
            );
        }
    }
    // The short way is taken where it can be: a comparison of a number.
    let s = scope(PAYLOADS[0]);
    let expr = Expr::condition("payload.n >= 10000").unwrap();
    let quick = expr.0.quick.as_ref().unwrap();
    assert_eq!(quick.holds(&s), Some(true));
}

#[test]
fn the_short_way_and_minijinja_write_the_same_bodies() {
    let shapes = [
        json!({"n": "{{ payload.n }}", "email": "{{ payload.email }}"}),
        json!({"note": "lead {{ job.key }} for {{ payload.email }}", "fixed": [1, "two", null]}),
        json!({"n": "n={{ payload.n }}", "vip": "{{payload.vip}}", "tier": "{{ payload.tier }}"}),
        json!(["{{ steps.score.response.json }}", "{{ steps.score.response.status }}", {"h": "{{ steps.score.response.headers }}"}]),
        json!({"k\"ey é": "{{ job.id }}", "p": "{{ job.priority }}", "at": "{{ job.created_at }}"}),
        json!({"missing": "{{ payload.missing }}"}),
        json!({"text": "{{ payload.missing }} after"}),
        json!({"filtered": "{{ payload.email | upper }}", "n": "{{ payload.n }}"}),
    ];
    for shape in shapes {
        let mapping = Mapping::compile(&shape).unwrap();
        for payload in PAYLOADS {
            let s = scope(payload);
            assert_eq!(
                mapping.render(&s),
                mapping.render_by_template(&s),
                "{shape} on {payload}"
            );
        }
    }
}

#[test]
fn a_body_keeps_its_keys_in_the_order_written_and_received() {
    let s = scope(r#"{"zeta": 1, "alpha": {"y": 2, "b": 3}}"#);
    let shape: serde_json::Value = serde_json::from_str(
        r#"{"to": "{{ payload.zeta }}", "from": "x", "lead": "{{ payload }}",
            "answer": "{{ steps.score.response.json }}", "aa": "{{ payload.alpha | tojson }}"}"#,
    )
    .unwrap();
    let mapping = Mapping::compile(&shape).unwrap();
    let expected = r#"{"to":1,"from":"x","lead":{"zeta":1,"alpha":{"y":2,"b":3}},"answer":{"score":72,"tier":"gold"},"aa":"{\"y\": 2, \"b\": 3}"}"#;
    let written: serde_json::Value = serde_json::from_str(&mapping.render(&s).unwrap()).unwrap();
    assert_eq!(written.to_string(), expected, "the short way");
    let by_template: serde_json::Value =
        serde_json::from_str(&mapping.render_by_template(&s).unwrap()).unwrap();
    assert_eq!(by_template.to_string(), expected, "MiniJinja");
}
