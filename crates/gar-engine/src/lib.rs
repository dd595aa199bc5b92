//! gar-engine: everything between a user's request and the model — checkpoint resolution,
//! loading, generation with streaming, and the per-request state the model itself never holds.

pub mod resolve;
pub mod overlay;
