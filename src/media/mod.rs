//! (being written)
pub mod g711;
