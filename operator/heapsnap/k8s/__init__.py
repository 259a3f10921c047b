"""Kubernetes side: HeapSnapshot types, conditions, and pod transports over the API server."""
