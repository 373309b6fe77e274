pub mod message;
pub mod transaction;
