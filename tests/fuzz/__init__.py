"""Fuzzing of every decoder that reads outside input, seeded from the golden recordings."""
