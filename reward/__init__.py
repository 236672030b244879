"""Rewards for NPR: answer extraction and correctness, the format score, and the stage rewards verl calls."""
