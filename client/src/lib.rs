//! KV client library (in progress).
