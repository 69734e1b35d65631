"""The synthetic world: scenes, rendering, simulated events, video, captions, datasets, grounding."""
