"""An asyncio client of the ``xmr.v1.Retrieval`` service (what a generation backend or a load generator uses).

    async with Client("127.0.0.1:50051") as c:
        hits = await c.retrieve("products", "wooden train set", top_k=5)
        completions = await c.complete("queries", "ho", previous_query="harry potter")
"""

from __future__ import annotations

from typing import Any

import grpc

from serving.gen import retrieval_pb2 as pb
from serving.gen import retrieval_pb2_grpc as pb_grpc


class Client:
    """One channel to a server; methods return the response messages (grpc.aio.AioRpcError on failure)."""

    def __init__(self, target: str, token: str | None = None, root_cert: bytes | None = None,
                 timeout: float | None = 10.0) -> None:
        """``target`` host:port; ``token`` sent as a bearer token; ``root_cert`` (PEM) switches to TLS."""
        if root_cert is None:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_cert))
        self._stub = pb_grpc.RetrievalStub(self._channel)
        self._meta = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def retrieve(self, model: str, query: str, top_k: int = 10, **fields: Any) -> Any:
        """RetrieveResponse for one query (``fields``: beam_size, request_id, metadata_filter)."""
        return await self._stub.Retrieve(pb.RetrieveRequest(model=model, query=query, top_k=top_k, **fields),
                                         timeout=self.timeout, metadata=self._meta)

    async def batch_retrieve(self, model: str, queries: list[str], top_k: int = 10, **fields: Any) -> Any:
        """BatchRetrieveResponse: one result list per query, in order."""
        return await self._stub.BatchRetrieve(
            pb.BatchRetrieveRequest(model=model, queries=queries, top_k=top_k, **fields), timeout=self.timeout,
            metadata=self._meta)

    async def complete(self, model: str, prefix: str, previous_query: str = "", top_k: int = 10,
                       **fields: Any) -> Any:
        """CompleteResponse: completions of ``prefix`` given the session's previous query."""
        return await self._stub.Complete(
            pb.CompleteRequest(model=model, prefix=prefix, previous_query=previous_query, top_k=top_k, **fields),
            timeout=self.timeout, metadata=self._meta)

    async def list_models(self) -> Any:
        """ListModelsResponse."""
        return await self._stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout, metadata=self._meta)
