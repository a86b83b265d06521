//! A record batch as a Produce request, a replicated log chunk or a segment on disk holds it:
//! whatever parses yields exactly its declared messages, and encoding those messages again
//! gives a batch that parses to the same messages.
//!
//! Random bytes almost never carry a valid CRC-32, which would keep the fuzzer at the CRC
//! check; half the inputs get their CRC field set to the CRC of their bytes, so that the
//! checks after it (lengths, counts, varints, UTF-8) are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smq_protocol::record_batch::{self, layout, BatchView, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut batch = rest.to_vec();
    if mode % 2 == 1 && batch.len() >= layout::CRC_COVERS_FROM {
        let crc = crc32fast::hash(&batch[layout::CRC_COVERS_FROM..]);
        batch[layout::CRC..layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    check(&batch);
});

fn check(bytes: &[u8]) {
    // The length a scan of the log reads before parsing must agree with the parser.
    let declared = record_batch::total_len(bytes);
    let _ = record_batch::stored_timestamp_ms(bytes);
    let Ok(view) = BatchView::parse(bytes) else {
        return;
    };
    assert_eq!(declared, Some(bytes.len()));
    assert_eq!(view.len(), bytes.len());
    let messages: Vec<_> = view
        .messages()
        .map(|message| message.to_message())
        .collect();
    assert_eq!(messages.len(), view.message_count() as usize);
    assert_eq!(view.header().queue_id, view.queue_id());
    let again = record_batch::encode(view.topic(), view.queue_id(), &messages);
    let again = BatchView::parse(&again).expect("an encoded batch parses");
    let copies: Vec<_> = again
        .messages()
        .map(|message| message.to_message())
        .collect();
    // The encoder takes deltas from the first message and stores an earlier timestamp as a zero
    // delta (BatchBuilder), so timestamps are compared apart from the rest.
    assert_eq!(without_timestamps(copies), without_timestamps(messages));
}

fn without_timestamps(messages: Vec<Message>) -> Vec<Message> {
    messages
        .into_iter()
        .map(|message| Message {
            timestamp_ms: 0,
            ..message
        })
        .collect()
}
