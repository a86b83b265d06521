//! Keyed messages whose bodies name their key and sequence number (`customer-K` keys, sequence
//! `n` on key `n % keys`), sent to a topic and read back checking that each queue comes back in
//! offset order from 0 and each key in sequence order, byte for byte.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use smq_client::{ConsumedMessage, Consumer, Message, PendingDelivery, Producer};

/// How long [`read_in_order`] may take.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// The body of message `sequence` of `key`: both numbers, then 0 to 199 bytes of padding.
pub fn body(key: usize, sequence: usize) -> Vec<u8> {
    format!(
        "key-{key}|seq-{sequence:06}|{}",
        "p".repeat((key * 31 + sequence) % 200)
    )
    .into_bytes()
}

/// Hands messages `0..total` to `producer` for `topic` without waiting for them, message `n`
/// with key `customer-{n % keys}`; each one's key and its delivery to wait for.
pub async fn send(
    producer: &Producer,
    topic: &str,
    keys: usize,
    total: usize,
) -> Vec<(usize, PendingDelivery)> {
    let mut pending = Vec::with_capacity(total);
    for sequence in 0..total {
        let key = sequence % keys;
        let mut message = Message::from_body(body(key, sequence));
        message.key = format!("customer-{key}").into_bytes();
        pending.push((key, producer.start_send(topic, message).await.unwrap()));
    }
    pending
}

/// Reads with `consumer` (from the earliest offsets of messages [`send`] sent with `keys`)
/// until `counted` said yes to `total` messages, within 60 s; fails the test unless every queue
/// comes in offset order from 0 and every key in sequence order, each message byte for byte.
/// `what` names what is read, for the failure message.
pub async fn read_in_order(
    consumer: &mut Consumer,
    keys: usize,
    total: usize,
    what: &str,
    counted: impl Fn(&ConsumedMessage) -> bool,
) {
    let mut next_offset: HashMap<u32, u64> = HashMap::new();
    let mut next_sequence_of_key: HashMap<usize, usize> = HashMap::new();
    let mut found = 0;
    let deadline = Instant::now() + READ_DEADLINE;
    while found < total {
        assert!(
            Instant::now() < deadline,
            "only {found} of {total} {what} came back"
        );
        for message in consumer.poll(10_000).await.unwrap() {
            let expected_offset = next_offset.entry(message.queue_id).or_insert(0);
            assert_eq!(
                message.offset, *expected_offset,
                "queue {} skipped or repeated",
                message.queue_id
            );
            *expected_offset += 1;
            let text = std::str::from_utf8(&message.body).unwrap();
            let key: usize = text[4..text.find('|').unwrap()].parse().unwrap();
            let sequence: usize = text[text.find("seq-").unwrap() + 4..][..6].parse().unwrap();
            assert_eq!(&message.body[..], &body(key, sequence)[..], "byte for byte");
            assert_eq!(message.key, format!("customer-{key}").into_bytes());
            let expected = next_sequence_of_key.entry(key).or_insert(key);
            assert_eq!(sequence, *expected, "key {key} out of order");
            *expected += keys;
            if counted(&message) {
                found += 1;
            }
        }
    }
}
