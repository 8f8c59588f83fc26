"""Tests for longread_server.vendors."""
