"""Tests of the kastore C library (kastore/include), compiled and run by pytest."""
