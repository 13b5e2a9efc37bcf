//! The behavioural suite under smol (`smol::block_on`, smol's executor, async-io timers).
#![cfg(feature = "smol")]

mod common;
mod suite;

crate::suite!(common::Smol);
