"""podflow: who talks to whom in a Kubernetes cluster, whatever its CNI."""

__version__ = "0.1.0"
