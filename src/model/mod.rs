//! A model folder: its serving.yaml, its contract and its payload, resolved and checked.

pub mod name;
pub mod payload;
pub mod serving;
pub mod spec;
