//! End-to-end tests: the real `coffer` binary, started with a generated config on loopback,
//! driven by real clients. One test binary; each module is one area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod harness;

mod auth;
mod cli;
mod disk;
mod ftp;
mod hashes;
mod https;
mod inline;
mod keys;
mod kms;
mod limits;
mod nodes;
mod s3;
mod seams;
mod sftp;
