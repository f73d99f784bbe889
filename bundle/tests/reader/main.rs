//! Integration tests of the bundle reader: the committed bundles, and damaged copies of them.

mod committed;
mod damaged;
mod gguf;
mod golden;
mod util;
