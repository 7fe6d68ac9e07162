"""Tests of relay.workers: one node served by several processes."""
