"""Shared builders of small test inputs."""
