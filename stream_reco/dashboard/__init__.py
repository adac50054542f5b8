"""The live dashboard at /dashboard: one static page (index.html) polling a JSON endpoint."""
