//! Voice session: the UDP link to a channel and the threads that move audio through it.

pub mod link;
