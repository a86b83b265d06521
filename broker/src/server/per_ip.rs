//! Per source IP address: open connections, so that one host cannot take every connection slot,
//! and its share of the budget for large frames, so that one host cannot take all of it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

pub struct ConnectionsPerIp {
    limit: u32,
    /// Bytes of large frames still arriving that the connections of one address may hold.
    frame_share_bytes: usize,
    open: Mutex<HashMap<IpAddr, Address>>,
}

struct Address {
    connections: u32,
    frame_share: Arc<Semaphore>,
}

/// One open connection of an address; dropping it frees the slot.
pub struct Slot {
    owner: Arc<ConnectionsPerIp>,
    ip: IpAddr,
    /// The address's share of the budget for large frames, which all its connections take from.
    pub frame_share: Arc<Semaphore>,
}

impl ConnectionsPerIp {
    pub fn new(limit: u32, frame_share_bytes: usize) -> Arc<ConnectionsPerIp> {
        Arc::new(ConnectionsPerIp {
            limit,
            frame_share_bytes,
            open: Mutex::default(),
        })
    }

    /// A slot for one more connection from `ip`, unless it has `limit` open already.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let address = open.entry(ip).or_insert_with(|| Address {
            connections: 0,
            frame_share: Arc::new(Semaphore::new(self.frame_share_bytes)),
        });
        if address.connections >= self.limit {
            return None;
        }
        address.connections += 1;
        Some(Slot {
            owner: self.clone(),
            ip,
            frame_share: address.frame_share.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(address) = open.get_mut(&self.ip) {
            address.connections -= 1;
            if address.connections == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_a_slot_back_when_one_closes() {
        let per_ip = ConnectionsPerIp::new(2, 1024);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = per_ip.open(a).unwrap();
        let _second = per_ip.open(a).unwrap();
        assert!(per_ip.open(a).is_none(), "a third from the same address");
        assert!(per_ip.open(b).is_some(), "another address is not affected");
        drop(first);
        assert!(
            per_ip.open(a).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn the_connections_of_an_address_share_one_part_of_the_frame_budget() {
        let per_ip = ConnectionsPerIp::new(10, 1024);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let (first, second, other) = (
            per_ip.open(a).unwrap(),
            per_ip.open(a).unwrap(),
            per_ip.open(b).unwrap(),
        );
        let _held = first.frame_share.try_acquire_many(1000).unwrap();
        assert!(
            second.frame_share.try_acquire_many(100).is_err(),
            "the address's share is nearly taken"
        );
        assert!(
            other.frame_share.try_acquire_many(1000).is_ok(),
            "another address has its own share"
        );
    }
}
