"""Hosts known to netbootd: lifecycle and writes (hosts.py)."""
