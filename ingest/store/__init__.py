"""The data layer: every statement the service runs against PostgreSQL (moving here from repository*.py)."""
