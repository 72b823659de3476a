"""Spark applications of the pipeline: pure DataFrame -> DataFrame transforms plus thin drivers."""
