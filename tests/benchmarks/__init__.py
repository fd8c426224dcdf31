"""Tests of the benchmark suite itself: each benchmark runs (tiny mode), the table and rows."""
