//! Random moments a test can replay: xorshift64*, seeded from a variable
//! when it is set, else from the clock, the seed printed either way; or
//! from a fixed seed.

/// xorshift64*: random stop moments, replayable from a seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the variable `var` when it is set (to replay a run), else
    /// from the clock; prints the seed as `var=SEED`.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("random stop moments: {var}={seed}");
        Rng::seeded(seed)
    }

    /// The sequence of `seed`, for a test that wants the same numbers
    /// every run. xorshift needs a seed other than 0.
    pub fn seeded(seed: u64) -> Rng {
        assert_ne!(seed, 0, "xorshift64* stays at 0 from a 0 seed");
        Rng(seed)
    }

    /// The next number of the sequence.
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
