"""Pure core tests: real core objects, no server, no database."""
