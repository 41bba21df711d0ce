"""The Kubernetes layer: manifests derived from the catalogue, registered through one provider."""
