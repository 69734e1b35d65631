"""Speculative decoding: the engine (draft, verify in one target forward, accept, roll back),
concurrency with the draft model, and the wall-clock study's measurements."""
