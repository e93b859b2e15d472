"""Fakes of hosted providers' HTTP APIs, served on loopback exactly as their documentation describes."""
