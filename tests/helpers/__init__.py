"""Shared fakes for the test suite, one module per kind of fake."""
