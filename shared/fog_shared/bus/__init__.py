"""NATS JetStream plumbing: topology, provisioning, publishing, request/reply and consumers."""
