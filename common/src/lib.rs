//! Small things the coordinator and the participant share, so each exists
//! once: configuration-file errors and loading ([`config`]), opening SQLite
//! databases durably ([`sqlite`]), and time stamps ([`time`]).

pub mod config;
pub mod sqlite;
pub mod time;
