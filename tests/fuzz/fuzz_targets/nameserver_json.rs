//! JSON bodies of the NameServer's HTTP API, as the NameServer reads them (a broker's heartbeat,
//! a consumer's member heartbeat) and as clients and brokers read its answers (routes, the
//! cluster, consumer groups, errors). What decodes must pass or fail its bound checks without
//! panicking, and encode back to the same value.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smq_protocol::nameserver_api::{
    ApiError, ClusterView, ConsumerGroupList, ConsumerGroupView, Health, Heartbeat, HeartbeatReply,
    MemberHeartbeat, MemberHeartbeatReply, TopicList, TopicRoute,
};

/// Decodes `data` as `T` and, if it decodes, checks that encoding it gives JSON that decodes to
/// the same value.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&json).expect("encoded JSON decodes");
    assert_eq!(again, value);
    Some(value)
}

/// Only decodes: these carry lag in seconds as floats, which serde_json does not promise to
/// parse back to the same bits.
fn decode<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 11 {
        0 => {
            if let Some(heartbeat) = round_trip::<Heartbeat>(json) {
                let _ = heartbeat.validate();
            }
        }
        1 => {
            if let Some(route) = round_trip::<TopicRoute>(json) {
                let _ = route.validate();
            }
        }
        2 => {
            if let Some(member) = round_trip::<MemberHeartbeat>(json) {
                let _ = member.validate();
            }
        }
        3 => drop(round_trip::<HeartbeatReply>(json)),
        4 => drop(round_trip::<ClusterView>(json)),
        5 => drop(round_trip::<MemberHeartbeatReply>(json)),
        6 => drop(round_trip::<TopicList>(json)),
        7 => drop(round_trip::<Health>(json)),
        8 => drop(round_trip::<ApiError>(json)),
        9 => drop(decode::<ConsumerGroupList>(json)),
        _ => drop(decode::<ConsumerGroupView>(json)),
    }
});
