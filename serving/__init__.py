"""The xmr gRPC service (package ``xmr.v1``): retrieval and autocompletion over named models."""
