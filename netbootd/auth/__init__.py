"""Credentials: the admin token (admin_token.py); enrollment tokens come here too."""
