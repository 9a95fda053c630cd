"""Mesh identities: a CA, workload certificates with SPIFFE IDs, and loading them."""
