"""Tests for the local Ambient API server."""
