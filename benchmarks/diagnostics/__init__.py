"""Reliability diagnostics: they provoke a hazard (a fork while Arrow runs threads, DataLoader
workers started inside Ray trials) and count what happened, as data."""
