//! Stable hashing of customer ids: the same answer on every run, machine and replica, which
//! holdout splits, row sampling and experiment arms all depend on.

/// A stable 64-bit hash (FNV-1a) of a salt and a string: customer holdouts and row sampling
/// must not change between runs or platforms.
pub fn stable_hash(salt: &str, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([0u8]).chain(s.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a splitmix round.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// True for a `share` of keys, chosen by hash.
pub fn in_share(hash: u64, share: f64) -> bool {
    (hash as f64) < share.clamp(0.0, 1.0) * (u64::MAX as f64)
}
