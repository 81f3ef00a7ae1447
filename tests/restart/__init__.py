"""Tests that stop Home Assistant and start it again."""
