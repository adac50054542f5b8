"""Offline evaluation: replay real session logs through the engine and classic baselines."""
