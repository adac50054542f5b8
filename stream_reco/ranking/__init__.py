"""Ranking: score candidates, apply the shop's rules, explain each returned item."""
