//! Open connections per source IP address, so that one host cannot take every connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct ConnectionsPerIp {
    limit: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One open connection of an address; dropping it frees the slot.
pub struct Slot {
    owner: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    pub fn new(limit: u32) -> Arc<ConnectionsPerIp> {
        Arc::new(ConnectionsPerIp {
            limit,
            open: Mutex::default(),
        })
    }

    /// A slot for one more connection from `ip`, unless it has `limit` open already.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
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
        let per_ip = ConnectionsPerIp::new(2);
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
}
