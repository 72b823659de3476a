"""Producers of incoming raw files: the synthetic behaviour-log generator (real exports arrive as files)."""
