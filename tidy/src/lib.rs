//! Checks of the source tree itself, run as the tests in `tests/tidy.rs` (in the style of
//! rust-analyzer's tidy): the engine's layers import only downward, no two source files of a
//! crate import each other, and no source file grows past the size where it wants splitting.
