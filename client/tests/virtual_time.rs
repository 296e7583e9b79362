//! Application tests in virtual time: the real broker core in this process, a clock the test
//! moves. Each test finishes in milliseconds although it covers days.

use std::time::Duration;

use krest_client::embedded::VirtualBroker;
use krest_client::{AckMode, QueueKind, QueueSettings, SubscribeOptions};

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

fn queue(kind: QueueKind, ack_timeout: Duration) -> QueueSettings {
    QueueSettings {
        kind: kind as i32,
        ack_timeout_ms: ack_timeout.as_millis() as u64,
        ..Default::default()
    }
}

fn pull(queue: &str) -> SubscribeOptions {
    let mut options = SubscribeOptions::new(queue);
    options.pull = true;
    options.ack_mode = AckMode::Explicit;
    options
}

#[tokio::test]
async fn a_message_delayed_three_days_arrives_when_virtual_time_reaches_it_and_not_before() {
    let broker = VirtualBroker::start(Default::default());
    let client = broker.client().await.expect("client");
    let settings = queue(QueueKind::Delay, Duration::from_secs(30));
    client
        .declare_queue("reminders", settings)
        .await
        .expect("declare");
    client
        .producer("reminders")
        .send_delayed("pay the invoice", 3 * DAY)
        .await
        .expect("confirmed");
    let mut consumer = client
        .subscribe(pull("reminders"))
        .await
        .expect("subscribe");

    broker.advance(3 * DAY - Duration::from_secs(1)).await;
    let early = consumer.fetch(10, Duration::ZERO).await.expect("fetch");
    assert!(early.is_empty(), "one second before it is due: nothing");

    broker.advance(Duration::from_secs(1)).await;
    let due = consumer.fetch(10, Duration::ZERO).await.expect("fetch");
    assert_eq!(due.len(), 1);
    assert_eq!(&due[0].payload[..], b"pay the invoice");
    consumer.ack(&due[0]).await.expect("ack");
    assert_eq!(broker.elapsed(), 3 * DAY);
}

#[tokio::test]
async fn an_unacked_message_comes_back_after_a_twelve_hour_ack_timeout() {
    let broker = VirtualBroker::start(Default::default());
    let client = broker.client().await.expect("client");
    client
        .declare_queue("jobs", queue(QueueKind::Persistent, 12 * HOUR))
        .await
        .expect("declare");
    client
        .producer("jobs")
        .send("job 1")
        .await
        .expect("confirmed");
    let mut worker = client.subscribe(pull("jobs")).await.expect("subscribe");
    let first = worker.fetch(1, Duration::ZERO).await.expect("fetch");
    assert_eq!(first[0].delivery_count(), 1);

    broker.advance(12 * HOUR - Duration::from_secs(1)).await;
    assert!(
        worker
            .fetch(1, Duration::ZERO)
            .await
            .expect("fetch")
            .is_empty(),
        "still leased"
    );

    broker.advance(Duration::from_secs(1)).await;
    let again = worker.fetch(1, Duration::ZERO).await.expect("fetch");
    assert_eq!(again.len(), 1, "the lease expired: delivered again");
    assert_eq!(again[0].delivery_count(), 2);
    assert_eq!(again[0].sequence(), first[0].sequence());
}
