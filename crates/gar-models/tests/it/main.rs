//! One integration-test binary (fast to link): parity against the PyTorch fixtures, checkpoint loading and
//! error reporting, and real-weight decoding (SmolLM2 GGUF, skipped when not installed).

mod common;
mod loading;
mod ops;
mod parity;
mod smollm2;
