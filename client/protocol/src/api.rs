//! Which apis the protocol has, their stable key numbers, and the protocol versions this build
//! speaks and negotiates in the handshake.

use std::fmt;
use std::ops::RangeInclusive;

use crate::wire::DecodeError;

/// Lowest protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Highest protocol version this build speaks. Version 2: topic ids (Metadata, Fetch and
/// CommitOffset at version 2). Version 3: Produce version 2, the batches of many topic-queues in
/// one request.
pub const PROTOCOL_VERSION_MAX: u16 = 3;

/// One kind of request, with its response. The numbers are part of the wire format: a key is
/// never renumbered, and a retired key is never given to another api. Keys from 100 on are kept
/// for broker-to-broker traffic (replication).
///
/// ```
/// use smq_protocol::ApiKey;
///
/// assert_eq!(ApiKey::from_u16(1), Some(ApiKey::Produce));
/// assert_eq!(ApiKey::Fetch as u16, 2);
/// assert_eq!(ApiKey::Produce.version_in(1), Some(1));
/// assert_eq!(ApiKey::Fetch.version_in(2), Some(2));
/// assert_eq!(ApiKey::Produce.version_in(2), Some(1));
/// assert_eq!(ApiKey::Produce.version_in(3), Some(2));
/// // An unknown key and an unsupported version are refused apart.
/// assert!(ApiKey::check(42, 1).is_err());
/// assert_eq!(ApiKey::check(2, 1), Ok(ApiKey::Fetch));
/// assert_eq!(ApiKey::Produce.to_string(), "Produce (key 1)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ApiKey {
    /// First request on every connection: who is calling, which protocol versions it speaks.
    Handshake = 0,
    /// Append one record batch to a topic-queue (version 1), or one to each of many (version 2).
    Produce = 1,
    /// Read batches of a topic-queue from an offset, waiting for data up to a deadline.
    Fetch = 2,
    /// The earliest and latest offsets of a topic-queue.
    ListOffsets = 3,
    /// This broker's identity and the topics and queues it holds.
    Metadata = 4,
    /// Create a topic with a number of queues on this broker.
    CreateTopic = 5,
    /// Delete a topic and its data from this broker.
    DeleteTopic = 6,
    /// Store a consumer group's offset for a topic-queue.
    CommitOffset = 7,
    /// Read a consumer group's stored offset for a topic-queue.
    FetchOffset = 8,
}

impl ApiKey {
    /// Every api, in key order.
    pub const ALL: [ApiKey; 9] = [
        ApiKey::Handshake,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::CommitOffset,
        ApiKey::FetchOffset,
    ];

    /// The api with this key number, if this build knows it.
    pub fn from_u16(key: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(usize::from(key)).copied()
    }

    /// Whether this api has a version 2 (it carries topic ids): protocol version 2 uses it.
    fn has_topic_ids(self) -> bool {
        matches!(
            self,
            ApiKey::Fetch | ApiKey::Metadata | ApiKey::CommitOffset
        )
    }

    /// The newest version of this api's request and response bodies.
    fn latest_version(self) -> u16 {
        if self.has_topic_ids() || self == ApiKey::Produce {
            2
        } else {
            1
        }
    }

    /// Versions of this api's request and response bodies that this build reads and writes.
    pub fn versions(self) -> RangeInclusive<u16> {
        1..=self.latest_version()
    }

    /// The version of this api that peers use once they agreed on `protocol_version`; `None` if
    /// this build does not speak that protocol version.
    pub fn version_in(self, protocol_version: u16) -> Option<u16> {
        match protocol_version {
            1 => Some(1),
            2 if self.has_topic_ids() => Some(2),
            2 => Some(1),
            3 => Some(self.latest_version()),
            _ => None,
        }
    }

    /// Checks the header of a request or response: the api exists and this build speaks its
    /// version. The two failures are distinct so that a broker can answer "unsupported api key N"
    /// or "unsupported version".
    pub fn check(api_key: u16, version: u16) -> Result<ApiKey, DecodeError> {
        let api = ApiKey::from_u16(api_key).ok_or(DecodeError::UnknownApiKey {
            api_key,
            max_known: ApiKey::ALL[ApiKey::ALL.len() - 1] as u16,
        })?;
        let versions = api.versions();
        if !versions.contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                api,
                version,
                min: *versions.start(),
                max: *versions.end(),
            });
        }
        Ok(api)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (key {})", self, *self as u16)
    }
}

/// The protocol version two peers use: the highest one both speak, or `None` when their ranges
/// do not overlap (or a range is empty).
pub fn negotiate(client: RangeInclusive<u16>, broker: RangeInclusive<u16>) -> Option<u16> {
    let highest = (*client.end()).min(*broker.end());
    let lowest = (*client.start()).max(*broker.start());
    (lowest <= highest).then_some(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_stable() {
        let numbers: Vec<u16> = ApiKey::ALL.iter().map(|api| *api as u16).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        for api in ApiKey::ALL {
            assert_eq!(ApiKey::from_u16(api as u16), Some(api));
        }
        assert_eq!(ApiKey::from_u16(9), None);
    }

    #[test]
    fn every_api_has_a_version_in_every_protocol_version_this_build_speaks() {
        for protocol_version in PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX {
            for api in ApiKey::ALL {
                let version = api.version_in(protocol_version).unwrap();
                assert!(api.versions().contains(&version), "{api}");
            }
        }
    }

    #[test]
    fn negotiate_picks_the_highest_common_version() {
        assert_eq!(negotiate(1..=3, 2..=5), Some(3));
        assert_eq!(negotiate(1..=1, 1..=1), Some(1));
        assert_eq!(negotiate(4..=9, 1..=5), Some(5));
    }

    #[test]
    fn negotiate_fails_without_overlap() {
        assert_eq!(negotiate(1..=2, 3..=4), None);
        assert_eq!(negotiate(5..=6, 1..=4), None);
        let (min_version, max_version) = (3, 1); // a confused client's handshake
        assert_eq!(negotiate(min_version..=max_version, 1..=4), None);
    }

    #[test]
    fn unknown_api_key_and_unsupported_version_are_distinct_errors() {
        assert_eq!(
            ApiKey::check(42, 1),
            Err(DecodeError::UnknownApiKey {
                api_key: 42,
                max_known: 8
            })
        );
        assert_eq!(
            ApiKey::check(1, 7),
            Err(DecodeError::UnsupportedVersion {
                api: ApiKey::Produce,
                version: 7,
                min: 1,
                max: 2
            })
        );
        assert_eq!(
            ApiKey::check(5, 2),
            Err(DecodeError::UnsupportedVersion {
                api: ApiKey::CreateTopic,
                version: 2,
                min: 1,
                max: 1
            })
        );
        assert_eq!(ApiKey::check(2, 1), Ok(ApiKey::Fetch));
    }
}
