"""Tests of the integration running in Home Assistant."""
