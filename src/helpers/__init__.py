"""Cross-modal speculative decoding analysis suite."""
