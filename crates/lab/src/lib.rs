//! The lab: everything that measures shroud rather than runs it. The leakage audit
//! ([`audit`]), the statistics it uses ([`stats`]), SVG plots ([`plot`]), the benchmarks
//! behind `shroud bench` ([`bench`]) and the demo ([`demo`]). Every one of them runs the real
//! components on the in-process stack of `shroud_testkit`.
//!
//! The comparison with the `oram` crate in `shroud bench engine` is built only with the
//! `peer` feature (the `shroud` binary's `lab` feature), so that the build people install
//! does not carry a second ORAM and a second `rand`.

pub mod audit;
pub mod bench;
pub mod demo;
pub mod out;
pub mod plot;
pub mod stats;
