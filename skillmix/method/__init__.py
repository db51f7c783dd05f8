"""The SKILL-MIX method (SPEC.md) as pure functions: no files, no network, no clocks."""
