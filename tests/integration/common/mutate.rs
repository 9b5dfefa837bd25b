//! Deterministic mutation of binary inputs for the bounded fuzz runs inside `cargo test`.
#![allow(dead_code)]

use mlambda::infer::{InferError, Inferred};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

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

/// The kinds of mutation; each set below draws among its own.
#[derive(Clone, Copy)]
pub enum Mutation {
    FlipBit,
    SetByte,
    Remove,
    Insert,
    Truncate,
    /// A little-endian u32 set to an edge value (offsets and lengths of FlatBuffers and zips).
    EdgeInt,
    /// A run of 0xff: continuation bytes, so overlong or huge protobuf varints.
    OnesRun,
    /// A slice repeated elsewhere: duplicated fields and nested structure.
    Repeat,
}

/// For binary structure: FlatBuffers, zips, pickles.
pub const BINARY: &[Mutation] = &[
    Mutation::FlipBit,
    Mutation::SetByte,
    Mutation::Remove,
    Mutation::Insert,
    Mutation::Truncate,
    Mutation::EdgeInt,
    Mutation::OnesRun,
    Mutation::Repeat,
];

/// For protobuf: lengths, keys, nesting.
pub const PROTOBUF: &[Mutation] = &[
    Mutation::FlipBit,
    Mutation::SetByte,
    Mutation::Remove,
    Mutation::Insert,
    Mutation::Truncate,
    Mutation::OnesRun,
    Mutation::Repeat,
];

/// One mutation of the [`BINARY`] set.
pub fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    mutate_with(rng, bytes, BINARY);
}

/// One mutation drawn from `kinds`.
pub fn mutate_with(rng: &mut Rng, bytes: &mut Vec<u8>, kinds: &[Mutation]) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let at = rng.below(bytes.len());
    match kinds[rng.below(kinds.len())] {
        Mutation::FlipBit => bytes[at] ^= 1 << rng.below(8),
        Mutation::SetByte => bytes[at] = rng.next() as u8,
        Mutation::Remove => {
            bytes.remove(at);
        }
        Mutation::Insert => bytes.insert(at, rng.next() as u8),
        Mutation::Truncate => bytes.truncate(at),
        Mutation::EdgeInt => {
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
        Mutation::OnesRun => {
            let run = 1 + rng.below(12);
            for i in 0..run {
                if at + i < bytes.len() {
                    bytes[at + i] = 0xff;
                }
            }
        }
        Mutation::Repeat => {
            let end = (at + 1 + rng.below(64)).min(bytes.len());
            let chunk = bytes[at..end].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, chunk);
        }
    }
}

/// A model reader under test: the bytes of a file and the name it is read as.
pub type Reader = fn(&[u8], &Path) -> Result<Inferred, InferError>;

/// Runs a reader; a panic fails the test showing the input, an error must name the file.
pub fn run(read: Reader, bytes: &[u8], name: &str, what: &str) -> Result<Inferred, InferError> {
    let path = Path::new(name);
    match catch_unwind(AssertUnwindSafe(|| read(bytes, path))) {
        Ok(Err(e)) => {
            let message = e.to_string();
            assert!(
                message.contains(name),
                "{what}: error does not name the file: {message}"
            );
            Err(e)
        }
        Ok(ok) => ok,
        Err(_) => panic!(
            "{what}: panicked on {} bytes: {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(64)]
        ),
    }
}
