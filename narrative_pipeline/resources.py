"""Dagster resources: where the data lives (paths, database, simd-r-drive store) and the model.

Every field is optional and falls back to the project's environment variables, then to an
embedded default under the data folder, so `dagster dev` works with no environment at all.
A deployment sets fields from the environment explicitly, e.g.
`DatabaseResource(url=EnvVar("NARRATIVE_DB_URL"))`, or just exports the variables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # imported lazily at run time: loading definitions stays cheap
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store.protocol import KeyValueStore
    from narrative_pipeline.us_gaap import UsGaapStore

DEFAULT_DATA_DIR = "data"
STORE_FILE_NAME = "narrative_store.bin"


def _setting(value: str | None, env_name: str) -> str | None:
    """The configured value, else the environment variable, else None (empty counts as unset)."""
    if value:
        return value
    return os.environ.get(env_name) or None


class PathsResource(dg.ConfigurableResource):
    """Folders: the CSV landing folder (watched by the sensor) and the data folder.

    The data folder holds the store, the SQLite database, checkpoints, plots and logs.
    """

    data_dir: str | None = None  # env NARRATIVE_DATA_DIR, default ./data
    csv_dir: str | None = None  # env NARRATIVE_CSV_DIR, default <data_dir>/csv

    @property
    def data_path(self) -> Path:
        return Path(_setting(self.data_dir, "NARRATIVE_DATA_DIR") or DEFAULT_DATA_DIR)

    @property
    def csv_path(self) -> Path:
        configured = _setting(self.csv_dir, "NARRATIVE_CSV_DIR")
        return Path(configured) if configured else self.data_path / "csv"

    def subdir(self, name: str) -> Path:
        """A folder under the data folder, created on first use."""
        path = self.data_path / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class DatabaseResource(dg.ConfigurableResource):
    """The facts database (`DbUsGaap`): SQLAlchemy URL, default SQLite under the data folder.

    Resolution: `url` field, then `NARRATIVE_DB_URL`, then the original's `MYSQL_*` variables
    (handled by `DbUsGaap`), then `<data_dir>/narrative.sqlite`.
    """

    url: str | None = None
    data_dir: str | None = None  # only for the SQLite default; env NARRATIVE_DATA_DIR

    def resolved_url(self) -> str | None:
        """The URL `DbUsGaap` will use; None lets `DbUsGaap` apply its own environment rules."""
        url = _setting(self.url, "NARRATIVE_DB_URL")
        if url:
            return url
        if os.environ.get("MYSQL_HOST"):
            return None
        data_dir = Path(_setting(self.data_dir, "NARRATIVE_DATA_DIR") or DEFAULT_DATA_DIR)
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(data_dir / 'narrative.sqlite').resolve()}"

    def get_db(self) -> DbUsGaap:
        """A `DbUsGaap` on the resolved URL (creates the schema when missing)."""
        from narrative_pipeline.db import DbUsGaap

        return DbUsGaap(self.resolved_url())

    def describe(self) -> str:
        """The URL with any password masked (user info and query parameters such as
        `?password=`), for metadata and logs."""
        url = self.resolved_url()
        return redact_url(url) if url else "(MYSQL_* environment)"


SECRET_QUERY_WORDS = ("pass", "pwd", "secret", "token", "key")  # ?password=, ?ssl_key=, ...


def redact_url(url: str) -> str:
    """`url` with the password of its user info and every secret-looking query value as
    `***`; an unparsable URL is shown only up to its scheme."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    if parsed.password is not None:
        parsed = parsed.set(password="***")
    secret = {k: "***" for k in parsed.query if any(w in k.lower() for w in SECRET_QUERY_WORDS)}
    if secret:
        parsed = parsed.update_query_dict(secret)
    return parsed.render_as_string(hide_password=False).replace("%2A%2A%2A", "***")


class StoreResource(dg.ConfigurableResource):
    """The simd-r-drive store: an embedded file, or a server over WebSocket.

    Resolution: `host` field (server), else `path` field (embedded), else
    `SIMD_R_DRIVE_SERVER_HOST`/`SIMD_R_DRIVE_SERVER_PORT` (server, the original's names), else the
    embedded file `<data_dir>/narrative_store.bin`. `client="official"` talks to the server with
    the official `simd_r_drive_ws_client` package instead of ours (same API).
    """

    path: str | None = None
    host: str | None = None
    port: int | None = None
    client: str = "ours"  # "ours" | "official"
    data_dir: str | None = None  # only for the embedded default; env NARRATIVE_DATA_DIR

    def server_address(self) -> tuple[str, int] | None:
        """(host, port) when a server is configured, else None (embedded)."""
        if self.host:
            return self.host, self.port or _env_port()
        if self.path:
            return None
        host = os.environ.get("SIMD_R_DRIVE_SERVER_HOST")
        if host:
            return host, self.port or _env_port()
        return None

    def embedded_path(self) -> Path:
        if self.path:
            return Path(self.path)
        data_dir = Path(_setting(self.data_dir, "NARRATIVE_DATA_DIR") or DEFAULT_DATA_DIR)
        return data_dir / STORE_FILE_NAME

    def describe(self) -> str:
        address = self.server_address()
        if address:
            return f"ws://{address[0]}:{address[1]} ({self.client} client)"
        return f"embedded file {self.embedded_path()}"

    def connect(self, read_only: bool = False) -> KeyValueStore:
        """A new store handle (DataStore or a WebSocket client); the caller closes it."""
        address = self.server_address()
        if address:
            return _ws_client(self.client, *address)
        from narrative_pipeline.store import DataStore

        path = self.embedded_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return DataStore(path, read_only=read_only)

    @contextlib.contextmanager
    def open(self, read_only: bool = False) -> Iterator[KeyValueStore]:
        """Open the store for the duration of a step and close it after (if it can close)."""
        handle = self.connect(read_only=read_only)
        try:
            yield handle
        finally:
            close = getattr(handle, "close", None)
            if callable(close):
                close()

    @contextlib.contextmanager
    def us_gaap_store(self, read_only: bool = False) -> Iterator[UsGaapStore]:
        """A `UsGaapStore` over a freshly opened store, closed after the block."""
        from narrative_pipeline.us_gaap_store import UsGaapStore

        with self.open(read_only=read_only) as handle:
            yield UsGaapStore(handle)

    def us_gaap_store_factory(self) -> Callable[[], UsGaapStore]:
        """A picklable-enough factory opening a read-only `UsGaapStore` (one per DataLoader worker)."""
        return _UsGaapStoreFactory(self.server_address(), self.client, str(self.embedded_path()))


class _UsGaapStoreFactory:
    """Opens a `UsGaapStore` in whatever process calls it; a class so DataLoader workers can pickle it."""

    def __init__(self, address: tuple[str, int] | None, client: str, path: str) -> None:
        self.address = address
        self.client = client
        self.path = path

    def __call__(self) -> UsGaapStore:
        from narrative_pipeline.us_gaap_store import UsGaapStore

        if self.address:
            return UsGaapStore(_ws_client(self.client, *self.address))
        from narrative_pipeline.store import DataStore

        return UsGaapStore(DataStore(self.path, read_only=True))


def _env_port() -> int:
    raw = os.environ.get("SIMD_R_DRIVE_SERVER_PORT")
    if not raw:
        raise ValueError(
            "a simd-r-drive server host is configured but no port: set StoreResource.port "
            "or SIMD_R_DRIVE_SERVER_PORT"
        )
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"SIMD_R_DRIVE_SERVER_PORT must be an integer, got {raw!r}") from None


def _ws_client(client: str, host: str, port: int) -> KeyValueStore:
    if client == "official":
        if importlib.util.find_spec("simd_r_drive_ws_client") is None:
            raise RuntimeError(
                "StoreResource(client='official') needs the simd-r-drive-ws-client package"
            )
        from simd_r_drive_ws_client import DataStoreWsClient as OfficialClient

        return OfficialClient(host, port)
    if client != "ours":
        raise ValueError(f"StoreResource.client must be 'ours' or 'official', got {client!r}")
    from narrative_pipeline.store import DataStoreWsClient

    return DataStoreWsClient(host, port)


class EmbeddingModelResource(dg.ConfigurableResource):
    """The sentence-embedding model: a name or local path; default the packaged all-MiniLM-L6-v2."""

    model: str | None = None  # env NARRATIVE_EMBEDDING_MODEL

    def model_name_or_path(self) -> str | None:
        """None lets `UsGaapStore.generate_embeddings` pick the packaged default model."""
        return _setting(self.model, "NARRATIVE_EMBEDDING_MODEL")


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources `defs` uses: all defaults resolved from the environment at run time."""
    return {
        "paths": PathsResource(),
        "database": DatabaseResource(),
        "store": StoreResource(),
        "embedding_model": EmbeddingModelResource(),
    }
