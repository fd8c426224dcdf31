"""Local decisions: pure, synchronous, clock-injected rules."""
