//! Deterministic mutation of binary inputs for the bounded fuzz runs inside `cargo test`.
//! Include with `#[path = "common/mutate.rs"] mod mutate;`.
#![allow(dead_code)]

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `INFER_MUTATION_SEED` when set (for longer local runs), else `default`.
    pub fn from_env(default: u64) -> Rng {
        let seed = std::env::var("INFER_MUTATION_SEED")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        Rng(seed.unwrap_or(default) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
}

/// `INFER_MUTATION_SCALE` (default 1) multiplies the rounds of a local run.
pub fn scale() -> usize {
    std::env::var("INFER_MUTATION_SCALE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// One mutation likely to hit binary structure: bit flips, bytes, cuts, repeats, and
/// little-endian integers set to edge values (offsets and lengths of FlatBuffers and zips).
pub fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let at = rng.below(bytes.len());
    match rng.below(8) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => bytes[at] = rng.next() as u8,
        2 => {
            bytes.remove(at);
        }
        3 => bytes.insert(at, rng.next() as u8),
        4 => bytes.truncate(at),
        5 => {
            let value: u32 = match rng.below(6) {
                0 => 0,
                1 => u32::MAX,
                2 => 0x7fff_ffff,
                3 => 0x8000_0000,
                4 => rng.below(bytes.len() + 16) as u32,
                _ => rng.next() as u32,
            };
            for (i, b) in value.to_le_bytes().into_iter().enumerate() {
                if at + i < bytes.len() {
                    bytes[at + i] = b;
                }
            }
        }
        6 => {
            let run = 1 + rng.below(12);
            for i in 0..run {
                if at + i < bytes.len() {
                    bytes[at + i] = 0xff;
                }
            }
        }
        _ => {
            let end = (at + 1 + rng.below(64)).min(bytes.len());
            let chunk = bytes[at..end].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, chunk);
        }
    }
}
