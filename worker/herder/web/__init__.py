"""Pieces shared by Herder's HTTP servers (the dashboard and the HTTP API)."""
