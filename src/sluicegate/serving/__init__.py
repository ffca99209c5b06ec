"""Serving support shipped inside every Bento: request schemas, the prediction log, the service template."""
