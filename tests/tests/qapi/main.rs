//! qmp-qapi's generated types against real servers, in one test binary (the dispatch over every command is
//! compiled once): `drift` runs every read-only query of every server and checks the events; `schema_walk`
//! checks that everything in a live `query-qmp-schema` is representable.

mod drift;
mod schema_walk;
mod support;
