"""The agent: the loop that wires one node's sources to the pipeline and the store."""
