pub mod dialog;
pub mod message;
pub mod transaction;
pub mod transport;
