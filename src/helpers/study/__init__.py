"""The study: recorded pairs, the split, metrics, drafters, alignment analysis and findings."""
