"""Tests of the Ambient Weather integration and its tools."""
