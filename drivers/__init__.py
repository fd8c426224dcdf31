"""Southbound drivers: protocol traffic in, Samples out. They know nothing of rules or storage."""
