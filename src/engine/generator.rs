//! Materialize's load generators, for trying eddy without a producer.
//! Each generated relation is a stream over a one-partition topic into
//! which a task appends JSON records each tick, fsynced like an INSERT:
//!
//! - `COUNTER [(TICK INTERVAL '1s', UP TO n)]`: `counter bigint`, 1, 2, …
//!   one per tick.
//! - `NEXMARK [(TICK INTERVAL, SCALE FACTOR s, UP TO n)] FOR ALL TABLES`
//!   (or `FOR TABLES (bid [AS name], …)`): the Nexmark benchmark's
//!   `person`, `auction` and `bid` streams from the `nexmark` crate (the
//!   generator RisingWave uses), `1000 × s` events a second across the
//!   three (1 : 3 : 46); UP TO n stops at n events in all.
//! - `AUCTION [(TICK INTERVAL)] FOR ALL TABLES`: Materialize's auction
//!   house: fixed `organizations`, `users` and `accounts`, and each tick a
//!   new row of `auctions` with its `bids`.
//!
//! Records are a function of their position and of the topic's creation
//! time only (event times are `created + position × period`; random
//! fields are seeded by position), and the topic is the generator's
//! progress: after a restart each stream goes on from its topic's end
//! offset, catching up to the clock at up to ten ticks' worth a tick, so
//! what is generated is dense and the same as without the restart. Each
//! stream of a multi-table generator runs its own task; they agree
//! because every record is a function of its position. DROP stops a
//! stream's task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogStore};

/// What a generator's stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Counter,
    Nexmark(nexmark::event::EventType),
    Auction(AuctionTable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuctionTable {
    Organizations,
    Users,
    Accounts,
    Auctions,
    Bids,
}

/// The generators and their tables, by Materialize's names.
const TABLES: &[(&str, &str, Table, &str)] = &[
    ("counter", "counter", Table::Counter, "(counter bigint)"),
    (
        "nexmark",
        "person",
        Table::Nexmark(nexmark::event::EventType::Person),
        "(id bigint, name text, email_address text, credit_card text, city text, state text, \
         date_time timestamp, extra text)",
    ),
    (
        "nexmark",
        "auction",
        Table::Nexmark(nexmark::event::EventType::Auction),
        "(id bigint, item_name text, description text, initial_bid bigint, reserve bigint, \
         date_time timestamp, expires timestamp, seller bigint, category bigint, extra text)",
    ),
    (
        "nexmark",
        "bid",
        Table::Nexmark(nexmark::event::EventType::Bid),
        "(auction bigint, bidder bigint, price bigint, channel text, url text, \
         date_time timestamp, extra text)",
    ),
    (
        "auction",
        "organizations",
        Table::Auction(AuctionTable::Organizations),
        "(id bigint, name text)",
    ),
    (
        "auction",
        "users",
        Table::Auction(AuctionTable::Users),
        "(id bigint, org_id bigint, name text)",
    ),
    (
        "auction",
        "accounts",
        Table::Auction(AuctionTable::Accounts),
        "(id bigint, org_id bigint, balance bigint)",
    ),
    (
        "auction",
        "auctions",
        Table::Auction(AuctionTable::Auctions),
        "(id bigint, seller bigint, item text, end_time timestamptz)",
    ),
    (
        "auction",
        "bids",
        Table::Auction(AuctionTable::Bids),
        "(id bigint, buyer bigint, auction_id bigint, amount integer, bid_time timestamptz)",
    ),
];

/// The tables generator `kind` (lower case) makes, by name, with their
/// columns; None for a generator eddy does not have.
pub fn tables(kind: &str) -> Option<Vec<(&'static str, Table, &'static str)>> {
    let t: Vec<_> = TABLES
        .iter()
        .filter(|(k, ..)| *k == kind)
        .map(|(_, name, table, cols)| (*name, *table, *cols))
        .collect();
    (!t.is_empty()).then_some(t)
}

fn table_name(t: Table) -> (&'static str, &'static str) {
    TABLES
        .iter()
        .find(|(_, _, table, _)| *table == t)
        .map_or(("counter", "counter"), |(k, n, ..)| (*k, *n))
}

/// One generated stream: its table and the generator's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Generator {
    pub table: Table,
    pub tick: Duration,
    pub up_to: Option<i64>,
    /// NEXMARK's SCALE FACTOR: 1000 × this many events a second.
    pub scale: f64,
}

/// Users (and accounts) of the auction house; organizations.
const USERS: i64 = 200;
const ORGANIZATIONS: i64 = 20;
const ITEMS: &[&str] = &[
    "Best Pizza in Town",
    "Gift Basket",
    "City Bar Crawl",
    "Custom Art",
    "Signed Memorabilia",
    "Vintage Watch",
    "Concert Tickets",
    "Cooking Class",
];

impl Generator {
    /// Materialize's defaults: a tick a second, no end, scale 1.
    pub fn new(table: Table) -> Generator {
        Generator {
            table,
            tick: Duration::from_secs(1),
            up_to: None,
            scale: 1.0,
        }
    }

    /// As stream options (`load_generator`, `tick_ms`, …): the parse
    /// hands them to CREATE SOURCE through its option map.
    pub fn to_options(&self, options: &mut BTreeMap<String, String>) {
        let (kind, name) = table_name(self.table);
        options.insert("load_generator".into(), format!("{kind}.{name}"));
        options.insert("tick_ms".into(), self.tick.as_millis().to_string());
        options.insert("scale_factor".into(), self.scale.to_string());
        if let Some(n) = self.up_to {
            options.insert("up_to".into(), n.to_string());
        }
    }

    pub fn from_options(options: &BTreeMap<String, String>) -> Option<Generator> {
        let which = options.get("load_generator")?;
        let (kind, name) = which.split_once('.').unwrap_or((which, which));
        let table = TABLES.iter().find(|(k, n, ..)| *k == kind && *n == name)?.2;
        Some(Generator {
            table,
            tick: Duration::from_millis(options.get("tick_ms")?.parse().ok()?),
            up_to: options.get("up_to").and_then(|n| n.parse().ok()),
            scale: options
                .get("scale_factor")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1.0),
        })
    }

    /// Nexmark events a second.
    fn rate(&self) -> usize {
        ((1000.0 * self.scale).round() as usize).max(1)
    }

    fn nexmark(&self, created_ms: i64) -> nexmark::config::NexmarkConfig {
        nexmark::config::NexmarkConfig {
            base_time: created_ms.max(0) as u64,
            first_rate: self.rate(),
            next_rate: self.rate(),
            ..Default::default()
        }
    }

    /// The records to append after `end` records (the topic's end offset)
    /// up to the clock `now_ms`, at most ten ticks' worth; None when the
    /// stream is complete (UP TO reached, or a fixed table written).
    /// `last` reads the value of the topic's last record.
    fn next(
        &self,
        end: i64,
        created_ms: i64,
        now_ms: i64,
        last: impl FnOnce() -> Option<serde_json::Value>,
    ) -> Option<Vec<(Option<String>, serde_json::Value, i64)>> {
        let tick_ms = (self.tick.as_millis() as i64).max(1);
        // The event time of tick k (k = 0, 1, …).
        let at = |k: i64| created_ms + k * tick_ms;
        let mut out = Vec::new();
        match self.table {
            Table::Counter => {
                let next = end + 1;
                if self.up_to.is_some_and(|n| next > n) {
                    return None;
                }
                out.push((None, json!({ "counter": next }), now_ms));
            }
            Table::Nexmark(kind) => {
                use nexmark::event::Event;
                let mut g = nexmark::EventGenerator::new(self.nexmark(created_ms))
                    .with_type_filter(kind)
                    .with_offset(end.max(0) as u64);
                let cap =
                    (self.rate() as u128 * self.tick.as_millis() * 10 / 1000).max(10) as usize;
                while out.len() < cap && (g.timestamp() as i64) <= now_ms {
                    if self.up_to.is_some_and(|n| g.global_offset() as i64 >= n) {
                        if out.is_empty() {
                            return None;
                        }
                        break;
                    }
                    let Some(event) = g.next() else { break };
                    let ms = event.timestamp() as i64;
                    let value = match event {
                        Event::Person(p) => json!({
                            "id": p.id, "name": p.name, "email_address": p.email_address,
                            "credit_card": p.credit_card, "city": p.city, "state": p.state,
                            "date_time": p.date_time, "extra": p.extra,
                        }),
                        Event::Auction(a) => json!({
                            "id": a.id, "item_name": a.item_name, "description": a.description,
                            "initial_bid": a.initial_bid, "reserve": a.reserve,
                            "date_time": a.date_time, "expires": a.expires, "seller": a.seller,
                            "category": a.category, "extra": a.extra,
                        }),
                        Event::Bid(b) => json!({
                            "auction": b.auction, "bidder": b.bidder, "price": b.price,
                            "channel": b.channel, "url": b.url, "date_time": b.date_time,
                            "extra": b.extra,
                        }),
                    };
                    out.push((None, value, ms));
                }
            }
            Table::Auction(t) => {
                let fixed = |n: i64, row: &dyn Fn(i64) -> serde_json::Value| {
                    (end < n).then(|| {
                        (end + 1..=n)
                            .map(|id| (Some(id.to_string()), row(id), created_ms))
                            .collect::<Vec<_>>()
                    })
                };
                match t {
                    AuctionTable::Organizations => {
                        return fixed(
                            ORGANIZATIONS,
                            &|id| json!({"id": id, "name": format!("org{id}")}),
                        );
                    }
                    AuctionTable::Users => {
                        return fixed(
                            USERS,
                            &|id| json!({"id": id, "org_id": id % ORGANIZATIONS + 1, "name": format!("user{id}")}),
                        );
                    }
                    AuctionTable::Accounts => {
                        return fixed(USERS, &|id| {
                            json!({"id": id, "org_id": id % ORGANIZATIONS + 1,
                                   "balance": 1000 + mix(id as u64, 7) % 9000})
                        });
                    }
                    AuctionTable::Auctions => {
                        // Auction k + 1 opens at tick k.
                        let mut k = end;
                        while out.len() < 10 && at(k) <= now_ms {
                            if self.up_to.is_some_and(|n| k >= n) {
                                break;
                            }
                            out.push((Some((k + 1).to_string()), auction(k + 1, at(k)), at(k)));
                            k += 1;
                        }
                        if out.is_empty() && self.up_to.is_some_and(|n| k >= n) {
                            return None;
                        }
                    }
                    AuctionTable::Bids => {
                        // The bids of auction a are written together, so
                        // the last bid names the last auction bid on.
                        let mut a = if end == 0 {
                            1
                        } else {
                            last()?.get("auction_id")?.as_i64()? + 1
                        };
                        let mut id = end;
                        let mut ticks = 0;
                        while ticks < 10 && at(a - 1) <= now_ms {
                            if self.up_to.is_some_and(|n| a > n) {
                                break;
                            }
                            for (amount, i) in bids(a).into_iter().zip(0..) {
                                id += 1;
                                let ms = at(a - 1) + 1 + i;
                                out.push((
                                    Some(id.to_string()),
                                    json!({"id": id, "buyer": 1 + mix(a as u64, 100 + i as u64) % USERS as u64,
                                           "auction_id": a, "amount": amount, "bid_time": ms}),
                                    ms,
                                ));
                            }
                            a += 1;
                            ticks += 1;
                        }
                        if out.is_empty() && self.up_to.is_some_and(|n| a > n) {
                            return None;
                        }
                    }
                }
            }
        }
        Some(out)
    }
}

/// A well-mixed hash of (n, salt) (splitmix64): the auction house's
/// random choices, the same for the same position after any restart.
fn mix(n: u64, salt: u64) -> u64 {
    let mut z = n
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn auction(id: i64, opened_ms: i64) -> serde_json::Value {
    let n = id as u64;
    json!({
        "id": id,
        "seller": 1 + mix(n, 1) % USERS as u64,
        "item": ITEMS[(mix(n, 2) % ITEMS.len() as u64) as usize],
        "end_time": opened_ms + 10_000 + (mix(n, 3) % 20_000) as i64,
    })
}

/// The amounts bid on auction `a`, rising: one to five bids.
fn bids(a: i64) -> Vec<i64> {
    let n = a as u64;
    let count = 1 + mix(n, 4) % 5;
    let mut amount = 1 + (mix(n, 5) % 50) as i64;
    (0..count)
        .map(|i| {
            amount += 1 + (mix(n, 10 + i) % 20) as i64;
            amount
        })
        .collect()
}

/// Append the stream's records to partition 0 of `topic` each tick until
/// it is complete (forever for most), from the topic's end.
pub async fn run(topic: String, generator: Generator, log: Arc<dyn LogStore>) {
    let Ok(created_ms) = log.topic_info(&topic).map(|t| t.created_ms) else {
        return;
    };
    let mut ticks = tokio::time::interval(generator.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if log.is_closed() {
            return;
        }
        let (log, topic, generator) = (Arc::clone(&log), topic.clone(), generator.clone());
        let appended = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let end = match log.offsets(&topic, 0) {
                Ok((_, end)) => end,
                // The topic went (DROP … DELETE TOPIC) or the log closed.
                Err(_) => return Ok(false),
            };
            let last = || {
                let (start, _) = log.offsets(&topic, 0).ok()?;
                let r = crate::log::records(
                    log.as_ref(),
                    &topic,
                    0,
                    (end - 1).max(start),
                    end,
                    1 << 16,
                )
                .flat_map(|r| r.ok().unwrap_or_default())
                .last()?;
                serde_json::from_slice(r.value.as_deref()?).ok()
            };
            let Some(rows) = generator.next(end, created_ms, crate::log::now_ms(), last) else {
                return Ok(false);
            };
            if rows.is_empty() {
                return Ok(true);
            }
            let records: Vec<NewRecord> = rows
                .into_iter()
                .map(|(key, value, ms)| NewRecord {
                    key: key.map(Bytes::from),
                    value: Some(Bytes::from(value.to_string())),
                    timestamp: ms,
                    headers: vec![],
                })
                .collect();
            let bytes = batch::encode(&records).map_err(|e| e.to_string())?;
            log.append(&topic, 0, bytes, Durability::Fsync)
                .map_err(|e| e.to_string())?;
            Ok(true)
        })
        .await;
        match appended {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "load generator: append failed; stopping");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generating in pieces (as ticks and restarts cut it) gives what one
    /// run gives.
    #[test]
    fn records_depend_on_position_only() {
        for table in [
            Table::Nexmark(nexmark::event::EventType::Bid),
            Table::Nexmark(nexmark::event::EventType::Person),
            Table::Auction(AuctionTable::Auctions),
        ] {
            let g = Generator {
                tick: Duration::from_millis(100),
                ..Generator::new(table)
            };
            let created = 1_700_000_000_000;
            let now = created + 5_000;
            let mut pieces = Vec::new();
            while let Some(rows) = g.next(pieces.len() as i64, created, now, || None) {
                if rows.is_empty() {
                    break;
                }
                pieces.extend(rows);
            }
            let mut again = Vec::new();
            let mut clock = created;
            loop {
                if let Some(rows) = g.next(again.len() as i64, created, clock, || None) {
                    again.extend(rows);
                }
                if clock == now {
                    break;
                }
                clock = (clock + 37).min(now);
            }
            assert!(pieces.len() > 10, "{table:?}: {}", pieces.len());
            assert_eq!(pieces, again, "{table:?}");
            // Event times never pass the clock and do not go back.
            assert!(pieces.iter().all(|(_, _, ms)| *ms <= now));
            assert!(pieces.windows(2).all(|w| w[0].2 <= w[1].2), "{table:?}");
        }
    }

    #[test]
    fn nexmark_proportions_and_up_to() {
        let mut counts = Vec::new();
        for kind in [
            nexmark::event::EventType::Person,
            nexmark::event::EventType::Auction,
            nexmark::event::EventType::Bid,
        ] {
            let g = Generator {
                up_to: Some(500),
                ..Generator::new(Table::Nexmark(kind))
            };
            let mut n = 0;
            while let Some(rows) = g.next(n, 0, i64::MAX / 2, || None) {
                n += rows.len() as i64;
            }
            counts.push(n);
        }
        assert_eq!(counts, vec![10, 30, 460]);
    }

    #[test]
    fn bids_follow_their_auctions() {
        let g = Generator::new(Table::Auction(AuctionTable::Bids));
        let rows = g.next(0, 0, 2_500, || None).unwrap_or_default();
        let auctions: Vec<i64> = rows
            .iter()
            .map(|(_, v, _)| v["auction_id"].as_i64().unwrap_or(0))
            .collect();
        // Ticks 0, 1 and 2 have passed: auctions 1 to 3.
        assert_eq!(auctions.first(), Some(&1));
        assert_eq!(auctions.last(), Some(&3));
        let last = rows.last().map(|(_, v, _)| v.clone());
        let more = g
            .next(rows.len() as i64, 0, 3_500, || last)
            .unwrap_or_default();
        assert_eq!(
            more.first().map(|(_, v, _)| v["auction_id"].clone()),
            Some(json!(4))
        );
        assert_eq!(
            more.first().map(|(_, v, _)| v["id"].clone()),
            Some(json!(rows.len() + 1))
        );
    }
}
