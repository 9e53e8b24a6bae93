//! KV relay server (in progress).
