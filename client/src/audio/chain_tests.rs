//! Whole-chain tests in-process: Tx → payloads (lossy) → Rx, scored with [`super::quality`].
