//! Small things the coordinator and the participant share, so each exists
//! once: configuration-file errors and loading ([`config`]), opening SQLite
//! databases durably ([`sqlite`]), time stamps ([`time`]), and an error
//! with its causes on one line, each said once ([`report`]).

pub mod config;
pub mod report;
pub mod sqlite;
pub mod time;
