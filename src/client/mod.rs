//! WHEP (and later WHIP) clients over real UDP, used by the CLI, the tests and the load tool.

pub mod whep;
