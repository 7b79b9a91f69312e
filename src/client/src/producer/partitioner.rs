//! Kafka's default partitioner: murmur2 of the key for keyed records, a sticky partition for
//! records without a key (KIP-480).

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, reading the input as
/// little-endian 4-byte blocks. Must match the Java client bit for bit, or keyed records
/// would land in other partitions than a Java producer puts them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Java takes `seed ^ length` with the length as an int.
    let mut h: u32 = SEED ^ (length as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record: `toPositive(murmur2(key)) % partitions`, as Kafka's
/// `BuiltInPartitioner.partitionForKey`.
///
/// # Panics
/// If `partition_count` is not positive (callers check the topic has partitions).
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

/// A partition for a record without a key, other than `current` when possible. Kafka picks
/// among partitions with a leader; so does the caller, by passing only those.
pub(crate) fn next_sticky_partition(candidates: &[i32], current: Option<i32>, random: u64) -> Option<i32> {
    let others: Vec<i32> = candidates.iter().copied().filter(|p| Some(*p) != current).collect();
    let pool = if others.is_empty() { candidates } else { &others[..] };
    if pool.is_empty() {
        return None;
    }
    let index = usize::try_from(random % pool.len() as u64).unwrap_or(0);
    Some(pool[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), *expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keyed_partitions_are_positive_and_stable() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 7 = 4.
        assert_eq!(partition_for_key(b"foobar", 7), 1_357_151_166 % 7);
        for key in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"abcde"] {
            let partition = partition_for_key(key, 3);
            assert!((0..3).contains(&partition));
            assert_eq!(partition, partition_for_key(key, 3));
        }
    }

    #[test]
    fn the_sticky_partition_moves_when_it_can() {
        assert_eq!(next_sticky_partition(&[0, 1, 2], Some(1), 1), Some(2));
        assert_eq!(next_sticky_partition(&[0, 1, 2], Some(1), 0), Some(0));
        assert_eq!(next_sticky_partition(&[5], Some(5), 9), Some(5));
        assert_eq!(next_sticky_partition(&[], None, 9), None);
    }
}
