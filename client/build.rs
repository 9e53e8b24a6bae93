// `KV_VERSION` for `kv --version` and `kv-tui --version`: the same script as the server's.
include!("../server/build.rs");
