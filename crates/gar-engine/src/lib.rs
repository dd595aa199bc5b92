//! gar-engine: everything between a user's request and the model — checkpoint resolution,
//! loading, generation with streaming, multi-turn chats that reuse the KV cache, and overlays.

pub mod bench;
pub mod engine;
pub mod error;
pub mod overlay;
pub mod resolve;

pub use engine::{Answer, Chat, Engine, EngineOptions, Timings};
pub use error::EngineError;
pub use resolve::{resolve_model, DEFAULT_MODEL};
