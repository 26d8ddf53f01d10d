"""End-to-end pipelines that sequence the stages (used by the CLI and benchmarks)."""
