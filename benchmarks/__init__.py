"""Benchmarks of the Ambient Weather integration, run by the scripts in scripts/."""
