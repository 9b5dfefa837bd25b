//! Contract inference: the contract a model folder's own framework metadata describes
//! (SPEC section 3), for folders that come without a hand-written contract.

// The readers are used by the framework files added next.
#![allow(dead_code)]

mod proto;
mod text;
mod wire;
