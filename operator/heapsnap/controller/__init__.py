"""The kopf operator: thin handlers over the engine, the sinks and the Kubernetes layer."""
