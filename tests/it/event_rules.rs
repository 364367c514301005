//! The event rules of `SPEC.md`, one case each: what is accepted, what is refused and why.

use atelier_lambda::event::*;
fn reason(line: &str) -> Reason {
    parse_json(line.as_bytes()).unwrap_err().reason
}

#[test]
fn accepts_the_workshop_format() {
    let e = parse_json(br#"{"customer": "Ali", "amount": 120}"#).unwrap();
    assert_eq!(e.id, None);
    assert_eq!(e.change, Change::Upsert(Txn { customer: "Ali".into(), cents: 12000, ts: None, category: None }));
}

#[test]
fn reads_every_optional_field_and_ignores_unknown_ones() {
    let e = parse_json(
        br#"{"id":7,"customer":"S\u00e9na","amount":-1.5,"ts":"2025-01-01T13:59:59+01:00","category":"books","x":[1]}"#,
    )
    .unwrap();
    assert_eq!(e.id.as_deref(), Some("7"));
    let Change::Upsert(t) = e.change else { panic!("an upsert") };
    assert_eq!(&*t.customer, "Séna");
    assert_eq!(t.cents, -150);
    assert_eq!(format_hour(hour_of(t.ts.unwrap())), "2025-01-01T12:00:00Z");
    assert_eq!(t.category.as_deref(), Some("books"));
}

#[test]
fn a_delete_needs_no_other_field() {
    let e = parse_json(br#"{"id":"t1","op":"delete"}"#).unwrap();
    assert_eq!(e, Event { id: Some("t1".into()), change: Change::Delete });
}

#[test]
fn every_reason_is_reachable() {
    assert_eq!(parse_json(b"{\"customer\":\"\xff\",\"amount\":1}").unwrap_err().reason, Reason::InvalidUtf8);
    assert_eq!(reason("{\"customer\":"), Reason::InvalidJson);
    assert_eq!(reason("not json"), Reason::InvalidJson);
    assert_eq!(reason("[1,2]"), Reason::NotAnObject);
    assert_eq!(reason(r#"{"amount":1}"#), Reason::MissingCustomer);
    assert_eq!(reason(r#"{"customer":null,"amount":1}"#), Reason::MissingCustomer);
    assert_eq!(reason(r#"{"customer":"","amount":1}"#), Reason::EmptyCustomer);
    assert_eq!(reason(&format!(r#"{{"customer":"{}","amount":1}}"#, "x".repeat(257))), Reason::CustomerTooLong);
    assert_eq!(reason(r#"{"customer":5,"amount":1}"#), Reason::BadCustomer);
    assert_eq!(reason(r#"{"customer":"a"}"#), Reason::MissingAmount);
    assert_eq!(reason(r#"{"customer":"a","amount":"12"}"#), Reason::BadAmount);
    assert_eq!(reason(r#"{"customer":"a","amount":1.234}"#), Reason::AmountTooPrecise);
    assert_eq!(reason(r#"{"customer":"a","amount":1e40}"#), Reason::AmountOverflow);
    assert_eq!(reason(r#"{"customer":"a","amount":1,"ts":"yesterday"}"#), Reason::BadTs);
    assert_eq!(reason(r#"{"customer":"a","amount":1,"op":"merge"}"#), Reason::BadOp);
    assert_eq!(reason(r#"{"customer":"a","amount":1,"id":true}"#), Reason::BadId);
    assert_eq!(reason(r#"{"customer":"a","amount":1,"category":3}"#), Reason::BadCategory);
}

#[test]
fn customer_at_the_limit_is_accepted() {
    let line = format!(r#"{{"customer":"{}","amount":1}}"#, "x".repeat(MAX_CUSTOMER_BYTES));
    assert!(parse_json(line.as_bytes()).is_ok());
}

#[test]
fn csv_rows_follow_the_same_rules() {
    let header = csv::StringRecord::from(vec!["customer", "amount", "id"]);
    let cols = CsvColumns::from_header(&header);
    let row = csv::StringRecord::from(vec!["Ali", "12.5", ""]);
    let e = Fields::from_csv(&row, &cols).validate().unwrap();
    assert_eq!(e.id, None);
    assert!(matches!(e.change, Change::Upsert(Txn { cents: 1250, .. })));
    let bad = csv::StringRecord::from(vec!["Ali", "twelve", ""]);
    assert_eq!(Fields::from_csv(&bad, &cols).validate().unwrap_err().reason, Reason::BadAmount);
}

#[test]
fn hour_bounds_accept_short_forms() {
    let full = parse_hour_bound("2025-01-01T13:00:00Z").unwrap();
    assert_eq!(parse_hour_bound("2025-01-01T13"), Some(full));
    assert_eq!(parse_hour_bound("2025-01-01"), Some(full - 13));
    assert_eq!(parse_hour_bound("soon"), None);
}
