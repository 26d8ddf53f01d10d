"""Simulators that write observation stores with known truth."""
