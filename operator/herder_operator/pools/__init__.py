"""Worker pools the reconciler drives: local processes and a Kubernetes Deployment."""
