"""The stack's ComponentResources: the GKE cluster, the KubeRay operator and the LLM service."""
