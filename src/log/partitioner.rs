//! Partition choice for eddy's own producers (the CLI, SQL inserts, sinks),
//! matching the Kafka Java client so that a key lands where a Java or
//! librdkafka (`murmur2_random`) producer would put it: murmur2 of the key
//! bytes, made positive by masking the sign bit, modulo the partition count.
//! Keyless records are spread round-robin.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), bit for bit.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's `toPositive(murmur2(key)) % numPartitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Chooses partitions for a stream of records.
#[derive(Debug, Default)]
pub struct Partitioner {
    next: AtomicU32,
}

impl Partitioner {
    pub fn new() -> Self {
        Partitioner::default()
    }

    pub fn partition(&self, key: Option<&[u8]>, partitions: i32) -> i32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => (self.next.fetch_add(1, Ordering::Relaxed) % partitions.max(1) as u32) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Kafka Java client's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"", 275646681),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partitions_are_positive_and_stable() {
        for p in 1..20 {
            for k in ["", "a", "key-1", "21", "foobar"] {
                let x = partition_for_key(k.as_bytes(), p);
                assert!((0..p).contains(&x));
                assert_eq!(x, partition_for_key(k.as_bytes(), p));
            }
        }
        // Keyless records visit every partition in turn.
        let pt = Partitioner::new();
        let got: Vec<i32> = (0..6).map(|_| pt.partition(None, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
