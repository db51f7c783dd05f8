"""Reasoning tasks: their configuration (built in, or a user's file), datasets, prompts and run folders."""
