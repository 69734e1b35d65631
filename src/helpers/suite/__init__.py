"""The suite's machinery: parameters, runner, run folders, provenance and the book. No torch."""
