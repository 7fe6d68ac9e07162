"""Tests of the benchmark's pure parts (the scenarios themselves run on demand)."""
