"""Tests of axnb/checks/ (a package: tests/checks/test_data.py vs tests/test_data.py)."""
