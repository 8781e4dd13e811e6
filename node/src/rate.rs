//! Request rate limits per client, as token buckets over plain data (the
//! caller passes the time): each client may send `rate` requests a second
//! on average and `burst` at once. Clients are IPv4 addresses or IPv6 /64
//! networks (one host owns a whole /64, so counting addresses would let it
//! pick a fresh one per request). At most `max_clients` buckets are kept:
//! full buckets are forgotten first, and when every kept client is busy a
//! newcomer shares one overflow bucket, so a flood from many addresses can
//! neither grow the table nor lock out the clients already served.

use std::collections::HashMap;
use std::net::IpAddr;

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (or an IPv4-mapped IPv6 one).
    V4([u8; 4]),
    /// An IPv6 /64 network (its first 8 bytes).
    V6([u8; 8]),
    /// Newcomers while the table is full.
    Overflow,
}

impl ClientKey {
    /// The key of the client at `ip`.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&v6.octets()[..8]);
                    ClientKey::V6(net)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests it may still send, in thousandths.
    milli_tokens: u64,
    /// When `milli_tokens` was last refilled.
    at_ms: u64,
}

/// Token buckets per client.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u64,
    burst: u64,
    max_clients: usize,
    buckets: HashMap<ClientKey, Bucket>,
}

impl RateLimiter {
    /// `rate` requests a second per client, `burst` at once (at least 1),
    /// at most `max_clients` clients tracked.
    pub fn new(rate: u32, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate.max(1)),
            burst: u64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        // rate per second is rate per thousand ms: thousandths per ms = rate.
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.burst * 1_000);
        bucket.at_ms = bucket.at_ms.max(now_ms);
    }

    /// Takes one request of the client at `ip` at `now_ms`: `Ok`, or the
    /// milliseconds until it may send again.
    pub fn check(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let mut key = ClientKey::of(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_clients {
            self.forget_idle(now_ms);
            if self.buckets.len() >= self.max_clients {
                key = ClientKey::Overflow;
            }
        }
        let full = Bucket {
            milli_tokens: self.burst * 1_000,
            at_ms: now_ms,
        };
        let mut bucket = self.buckets.get(&key).copied().unwrap_or(full);
        self.refill(&mut bucket, now_ms);
        let verdict = if bucket.milli_tokens >= 1_000 {
            bucket.milli_tokens -= 1_000;
            Ok(())
        } else {
            Err((1_000 - bucket.milli_tokens).div_ceil(self.rate).max(1))
        };
        self.buckets.insert(key, bucket);
        verdict
    }

    /// Forgets every client whose bucket has refilled completely (it would
    /// start full anyway).
    fn forget_idle(&mut self, now_ms: u64) {
        let (rate, burst) = (self.rate, self.burst * 1_000);
        self.buckets.retain(|key, bucket| {
            *key == ClientKey::Overflow
                || bucket
                    .milli_tokens
                    .saturating_add(now_ms.saturating_sub(bucket.at_ms).saturating_mul(rate))
                    < burst
        });
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut limiter = RateLimiter::new(10, 5, 100);
        let client = ip("10.0.0.1");
        for _ in 0..5 {
            assert_eq!(limiter.check(client, 0), Ok(()));
        }
        assert_eq!(limiter.check(client, 0), Err(100));
        // Another client is not held back.
        assert_eq!(limiter.check(ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(limiter.check(client, 99), Err(1));
        assert_eq!(limiter.check(client, 100), Ok(()));
        assert!(limiter.check(client, 100).is_err());
        // A long pause refills to the burst, no more.
        for _ in 0..5 {
            assert_eq!(limiter.check(client, 60_000), Ok(()));
        }
        assert!(limiter.check(client, 60_000).is_err());
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_changing_its_address() {
        let mut limiter = RateLimiter::new(1, 2, 100);
        assert!(limiter.check(ip("2001:db8::1"), 0).is_ok());
        assert!(limiter.check(ip("2001:db8::2"), 0).is_ok());
        assert!(limiter.check(ip("2001:db8::ffff:3"), 0).is_err());
        assert!(
            limiter.check(ip("2001:db8:0:1::1"), 0).is_ok(),
            "another /64"
        );
        // A mapped IPv4 address is that IPv4 client.
        assert!(limiter.check(ip("192.0.2.1"), 0).is_ok());
        assert!(limiter.check(ip("::ffff:192.0.2.1"), 0).is_ok());
        assert!(limiter.check(ip("192.0.2.1"), 0).is_err());
    }

    #[test]
    fn a_flood_of_addresses_shares_one_bucket_and_the_table_stays_bounded() {
        let mut limiter = RateLimiter::new(1, 1, 10);
        let known = ip("10.9.9.9");
        assert!(limiter.check(known, 0).is_ok());
        let mut admitted = 0;
        for i in 0..1_000u32 {
            let stranger = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            if limiter.check(stranger, 0).is_ok() {
                admitted += 1;
            }
        }
        assert!(limiter.clients() <= 11, "{}", limiter.clients());
        assert!(admitted <= 10, "{admitted}");
        // Once they are idle their buckets are forgotten for newcomers.
        assert!(limiter.check(ip("172.16.0.1"), 10_000).is_ok());
    }

    proptest! {
        /// Over any window no client gets more than two buckets' worth
        /// (its own and the overflow it shares), whatever the table does.
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1u32..50,
            burst in 1u32..50,
            steps in prop::collection::vec((0u64..200, 0u8..4), 1..400),
        ) {
            let mut limiter = RateLimiter::new(rate, burst, 2);
            let mut now = 0u64;
            let mut served = [0u64; 4];
            for (wait, client) in steps {
                now += wait;
                let address = IpAddr::from([10, 0, 0, client]);
                if limiter.check(address, now).is_ok() {
                    served[client as usize] += 1;
                }
            }
            // Each bucket stays within burst + rate * seconds. A client is
            // served from its own bucket, or, while the table is full and
            // its bucket was forgotten (full, so nothing is lost), from the
            // shared overflow bucket: two buckets' worth at most.
            let allowed = 2 * (u64::from(burst) + u64::from(rate) * now / 1_000 + 1);
            for count in served {
                prop_assert!(count <= allowed, "{} > {}", count, allowed);
            }
            prop_assert!(limiter.clients() <= 3);
        }
    }
}
