"""Command-line interface (`whatsreal ...`). Nothing in the package imports this."""
