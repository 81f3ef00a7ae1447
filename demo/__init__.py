"""Demo: Home Assistant with the ambient_weather integration against a local API."""
