"""Deployment checks: Dockerfile, .dockerignore and the Helm chart, without a Docker engine or a cluster."""
