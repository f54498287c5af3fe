"""Amazon Kinesis, as the consumer reads it: three calls through the AWS SDK (aiobotocore), errors sorted by kind.

The transport of Kinesis mode (exporter/doors/kinesis/consumer.py is the consumer): the stream's shards, a
shard iterator, a page of records. A call that fails raises :class:`KinesisError` with the kind
the consumer counts and acts on (throttled: back off; expired iterator: renew from the
checkpoint; anything else: back off and try again). The same shape as the REST door's
``InsightsApi`` beside its poller.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from botocore.session import Session as BotocoreSession

from exporter.config import KinesisSettings

# Values of KinesisError.kind (the errors counter's `kind` label, with the consumer's own "internal").
THROTTLED = "throttled"
EXPIRED_ITERATOR = "expired_iterator"
AWS_ERROR = "aws_error"
NETWORK_ERROR = "network_error"
_THROTTLING_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"})


def resolve_region(settings: KinesisSettings, environ: Mapping[str, str] = os.environ) -> str | None:
    """The stream's region: ``--kinesis.region``, else ``AWS_REGION``, else the SDK's chain (``AWS_DEFAULT_REGION``, the profile's).

    botocore itself reads ``AWS_DEFAULT_REGION`` and the profile but not ``AWS_REGION``, which
    the other AWS SDKs and EKS (IRSA) set: it is read here too. None when nothing names one:
    the start refuses that in one line (exporter/cli.py), where botocore would raise
    ``NoRegionError`` at the first request.
    """
    if settings.region:
        return settings.region
    if environ.get("AWS_REGION"):
        return environ["AWS_REGION"]
    region = BotocoreSession().get_config_variable("region")
    return str(region) if region else None


class KinesisError(Exception):
    """A request to Kinesis that failed; ``kind`` is the value of the errors counter's label."""

    def __init__(self, kind: str, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.kind = kind
        self.operation = operation


@dataclass(frozen=True, slots=True)
class Shard:
    id: str
    parents: tuple[str, ...]
    closed: bool


@dataclass(frozen=True, slots=True)
class Page:
    records: list[dict[str, Any]]
    next_iterator: str | None
    behind_seconds: float | None
    children: list[Shard]


class KinesisApi:
    """The three Kinesis calls the consumer makes, through the AWS SDK (aiobotocore).

    aiobotocore rather than botocore in a thread, measured (``python -m bench.kinesis``, figures in
    docs/performance.md, "Kinesis consumer"): botocore in a thread was up to a third cheaper per
    record in some runs and equal in others, a difference of a few percent of what the pipeline
    then spends on the record; aiobotocore does its I/O on the exporter's event loop, so it holds
    no thread and a read in flight is cancelled at once on shutdown.

    The SDK's own retries are off (one attempt per call): throttling and failures are retried by
    the consumer, with its backoff, and counted by kind; the SDK would hide them.
    """

    def __init__(self, settings: KinesisSettings) -> None:
        assert settings.stream_name is not None
        self.stream = settings.stream_name
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        # Whether the last ListShards answered (None before the first): what /-/ready reads in
        # Kinesis mode (exporter/app.py).
        self.listed: bool | None = None

    async def open(self) -> None:
        timeout = self._settings.timeout.total_seconds()
        config = AioConfig(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1, "mode": "standard"})
        session = get_session()  # the standard credential chain: environment, profile, web identity, instance role
        self._client = await self._stack.enter_async_context(
            session.create_client("kinesis", region_name=resolve_region(self._settings), endpoint_url=self._settings.endpoint_url, config=config)
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def shards(self) -> list[Shard]:
        """Every shard the stream keeps, open and closed, following ``NextToken``."""
        shards: list[Shard] = []
        params: dict[str, Any] = {"StreamName": self.stream}
        while True:
            try:
                answer = await self._call("ListShards", self._client.list_shards, **params)
            except KinesisError:
                self.listed = False
                raise
            shards += [_shard(raw) for raw in answer.get("Shards", [])]
            token = answer.get("NextToken")
            if not token:
                self.listed = True
                return shards
            params = {"NextToken": token}  # AWS refuses StreamName together with NextToken

    async def iterator(self, shard_id: str, kind: str, sequence: str | None = None, timestamp: float | None = None) -> str:
        params: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard_id, "ShardIteratorType": kind}
        if sequence is not None:
            params["StartingSequenceNumber"] = sequence
        if timestamp is not None:
            params["Timestamp"] = timestamp
        answer = await self._call("GetShardIterator", self._client.get_shard_iterator, **params)
        return str(answer["ShardIterator"])

    async def records(self, iterator: str, limit: int) -> Page:
        answer = await self._call("GetRecords", self._client.get_records, ShardIterator=iterator, Limit=limit)
        behind = answer.get("MillisBehindLatest")
        return Page(
            records=answer.get("Records", []),
            next_iterator=answer.get("NextShardIterator"),
            behind_seconds=None if behind is None else behind / 1000,
            children=[_shard(raw) for raw in answer.get("ChildShards") or []],
        )

    async def _call(self, operation: str, method: Callable[..., Awaitable[dict[str, Any]]], **params: Any) -> dict[str, Any]:
        assert self._client is not None, "KinesisApi.open() first"
        try:
            return await method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _THROTTLING_CODES:
                kind = THROTTLED
            elif code == "ExpiredIteratorException":
                kind = EXPIRED_ITERATOR
            else:
                kind = AWS_ERROR
            raise KinesisError(kind, operation, f"{code}: {error.get('Message', '')}") from exc
        except (ConnectionError, HTTPClientError, OSError, TimeoutError) as exc:
            raise KinesisError(NETWORK_ERROR, operation, f"{type(exc).__name__}: {exc}") from exc
        except BotoCoreError as exc:  # no credentials, no region, a malformed answer
            raise KinesisError(AWS_ERROR, operation, f"{type(exc).__name__}: {exc}") from exc


def _shard(raw: dict[str, Any]) -> Shard:
    """A shard of ListShards (``ParentShardId``, ``AdjacentParentShardId``) or of GetRecords' ``ChildShards`` (``ParentShards``)."""
    parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId"), *(raw.get("ParentShards") or ())) if p)
    closed = "EndingSequenceNumber" in (raw.get("SequenceNumberRange") or {})
    return Shard(str(raw["ShardId"]), parents, closed)
