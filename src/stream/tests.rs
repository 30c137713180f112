use super::*;
use crate::features::DAY;
use crate::state::embedded::EmbeddedStore;

const NOW: i64 = 20_000 * DAY;

#[test]
fn a_purchase_message_reads_as_record_purchases_would() {
    let e = purchase(
        br#"{"event_id":"e1","customer_id":"C7","timestamp":"2024-03-01T10:00:00Z","amount":12.5,"channel":"web","points_earned":3}"#,
        NOW,
    )
    .unwrap();
    assert_eq!((e.customer_id.as_str(), e.event_id.as_str()), ("C7", "e1"));
    assert_eq!(
        e.tx.ts,
        crate::time::parse_timestamp("2024-03-01T10:00:00Z").unwrap()
    );
    assert_eq!((e.tx.amount, e.tx.points_earned), (12.5, 3.0));
    assert_eq!(e.tx.channel, channel_id("web"));
    // A return, and a date alone.
    let r = purchase(
        br#"{"event_id":"e2","customer_id":"C7","timestamp":"2024-03-02","amount":-5}"#,
        NOW,
    )
    .unwrap();
    assert_eq!(r.tx.amount, -5.0);
}

#[test]
fn a_bad_message_names_the_field_and_never_its_value() {
    let cases: [(&[u8], &str); 8] = [
        (b"not json", "message"),
        (br#"{"event_id":"e","customer_id":"SECRET-ID""#, "message"),
        (br#"{"event_id":"e","customer_id":"SECRET-ID","timestamp":"2024-01-01","amount":"SECRET-AMOUNT"}"#, "message"),
        (br#"{"event_id":"","customer_id":"SECRET-ID","timestamp":"2024-01-01","amount":1}"#, "event_id"),
        (br#"{"event_id":"e","customer_id":"","timestamp":"2024-01-01","amount":1}"#, "customer_id"),
        (br#"{"event_id":"e","customer_id":"SECRET-ID","timestamp":"SECRET-TIME","amount":1}"#, "timestamp"),
        (br#"{"event_id":"e","customer_id":"SECRET-ID","timestamp":"2024-01-01","amount":1e12}"#, "amount"),
        (br#"{"event_id":"e","customer_id":"SECRET-ID","timestamp":"2054-01-01","amount":1}"#, "timestamp"),
    ];
    for (payload, field) in cases {
        let e = purchase(payload, NOW).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}

fn ev(customer: &str, id: &str, day: i64) -> Event {
    Event {
        customer_id: customer.into(),
        event_id: id.into(),
        tx: Transaction::new(NOW - 400 * DAY + day * DAY, 40.0),
    }
}

/// The first judgement publishes (from none), the same segment again publishes nothing, and
/// a silence that moves the segment publishes once.
#[tokio::test]
async fn a_change_is_published_once_and_only_when_the_segment_moves() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let model = crate::scoring::tests::tiny_model();
    let events: Vec<Event> = (0..20).map(|k| ev("a", &format!("e{k}"), k * 7)).collect();
    store.apply(&events, 3 * DAY).await.unwrap();
    let first = changes(&store, &model, &["a", "nobody"], When::AfterLatestPurchase)
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (first[0].customer_id.as_str(), first[0].from.as_deref()),
        ("a", None)
    );
    assert!(!first[0].reasons[0].is_empty());
    let again = changes(&store, &model, &["a"], When::AfterLatestPurchase)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // Two years later, with no purchase since: not where a weekly buyer was.
    let later = changes(&store, &model, &["a"], When::At(NOW + 600 * DAY))
        .await
        .unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].from.as_deref(), Some(first[0].to.as_str()));
    assert_ne!(later[0].to, first[0].to);
    assert!(changes(&store, &model, &["a"], When::At(NOW + 600 * DAY))
        .await
        .unwrap()
        .is_empty());
    // An erasure takes the mark with the state.
    store.forget("a", "test", "erasure").await.unwrap();
    assert_eq!(
        store.set_marks(&[("a", "steady")]).await.unwrap(),
        vec![Some(None)]
    );
}
