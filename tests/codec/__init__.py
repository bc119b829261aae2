"""Tests of the ``kastore`` codec (a package so module names cannot clash with tests/service)."""
