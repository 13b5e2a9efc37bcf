//! The behavioural suite under async-std (`async_std::task`, its timer and spawn).
#![cfg(feature = "async-std")]

mod common;
mod suite;

crate::suite!(common::AsyncStd);
