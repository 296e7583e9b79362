//! `Listeners` against the real servers: each handler outcome does what it says, concurrency
//! is bounded, and shutdown drains running handlers before unsubscribing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use krest_client::{ListenerSettings, Listeners, Outcome, SubscribeOptions};
use krest_tests::deliveries::client_with_persistent_queue;
use krest_tests::{Server, ServerKind};

krest_tests::for_each_server!(krest_tests::block_on;
    outcomes_ack_retry_and_dead_letter_and_shutdown_drains,
);

async fn outcomes_ack_retry_and_dead_letter_and_shutdown_drains(kind: ServerKind) {
    let server = Server::start(kind);
    let client = client_with_persistent_queue(&server, "work").await;
    let producer = client.producer("work");
    for body in ["ok-1", "flaky", "poison", "ok-2", "slow"] {
        producer.send(body).await.expect("confirmed");
    }

    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let most_running = Arc::new(AtomicUsize::new(0));
    let (slow_started, slow_started_signal) = tokio::sync::oneshot::channel::<()>();
    let slow_started = Arc::new(std::sync::Mutex::new(Some(slow_started)));
    let handler = {
        let acked = Arc::clone(&acked);
        let running = Arc::clone(&running);
        let most_running = Arc::clone(&most_running);
        move |delivery: krest_client::Delivery| {
            let acked = Arc::clone(&acked);
            let running = Arc::clone(&running);
            let most_running = Arc::clone(&most_running);
            let slow_started = Arc::clone(&slow_started);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most_running.fetch_max(now, Ordering::SeqCst);
                let body = String::from_utf8_lossy(&delivery.payload).into_owned();
                let outcome = match body.as_str() {
                    "poison" => Outcome::DeadLetter,
                    "flaky" if delivery.delivery_count() == 1 => {
                        Outcome::Retry(Some(Duration::from_millis(50)))
                    }
                    "slow" => {
                        if let Some(started) = slow_started.lock().unwrap().take() {
                            let _ = started.send(());
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Outcome::Ack
                    }
                    _ => Outcome::Ack,
                };
                if outcome == Outcome::Ack {
                    acked.lock().unwrap().push(body);
                }
                running.fetch_sub(1, Ordering::SeqCst);
                outcome
            }
        }
    };
    let settings = ListenerSettings {
        concurrency: 2,
        ..ListenerSettings::default()
    };
    let listeners =
        Listeners::new(client.clone()).listen(SubscribeOptions::new("work"), settings, handler);
    // Shut down while "slow" runs, once everything else was handled.
    let acked_view = Arc::clone(&acked);
    let shutdown = async move {
        let _ = slow_started_signal.await;
        while acked_view.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    listeners.run_until(shutdown).await.expect("listeners ran");

    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert_eq!(
        acked,
        vec!["flaky", "ok-1", "ok-2", "slow"],
        "drained: slow was acked"
    );
    assert!(
        most_running.load(Ordering::SeqCst) <= 2,
        "concurrency is bounded"
    );
    let work = client.queue_info("work").await.expect("info");
    assert_eq!(work.messages, 0, "nothing left behind: {work:?}");
    let dead = client
        .queue_info("work.dlq")
        .await
        .expect("the dead-letter queue exists");
    assert_eq!(dead.messages, 1, "poison was dead-lettered: {dead:?}");
}
