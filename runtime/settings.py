"""One typed settings object for every shelfcast process (env vars `SHELFCAST_*`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "TopicNames", "settings_env"]

# A JSON object {name: amount >= 0} read from one env var; decoded by the validator below (not
# by pydantic-settings) so that a typo is a one-line validation error, not a traceback.
AmountMap = Annotated[dict[str, Annotated[float, Field(ge=0)]], NoDecode]


class TopicNames:
    """Concrete topic names derived from the one prefix settings."""

    def __init__(self, shop_prefix: str, prefix: str) -> None:
        self.orders = f"{shop_prefix}orders"
        self.stock = f"{shop_prefix}stock"
        self.catalog = f"{shop_prefix}catalog"
        self.promotions = f"{shop_prefix}promotions"  # planned promotions (PromotionEvent)
        self.calendar = f"{shop_prefix}calendar"  # holidays per location (HolidayEvent)
        self.forecasts = f"{prefix}forecasts"
        self.restock = f"{prefix}restock"
        self.plans = f"{prefix}plans"
        self.alerts = f"{prefix}alerts"
        self.demand = f"{prefix}demand"  # closed buckets' observed demand (the actuals)
        self.dlq = f"{prefix}dlq"

    def inputs(self) -> list[str]:
        return [self.orders, self.stock, self.catalog, self.promotions, self.calendar]

    def outputs(self) -> list[str]:
        return [self.forecasts, self.restock, self.plans, self.alerts, self.dlq, self.demand]

    def all(self) -> list[str]:
        return self.inputs() + self.outputs()


class Settings(BaseSettings):
    """Settings for workers, optimizer and CLI. Env vars override `.env`; secrets never print."""

    model_config = SettingsConfigDict(
        env_prefix="SHELFCAST_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = demo starts an embedded broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the brokers' certificates")
    topic_partitions: int = Field(default=4, ge=1, description="partitions for topics we create")
    topic_replication: int = Field(default=1, ge=1)
    shop_topic_prefix: str = Field(default="shop.", description="prefix of the shop's input topics")
    topic_prefix: str = Field(default="shelfcast.", description="prefix of shelfcast's topics")
    app_id: str = Field(default="shelfcast", description="Faust app id / consumer group")
    kafka_request_timeout_ms: int = Field(
        default=30_000, ge=1000, description="producer request timeout before a send is retried")
    kafka_session_timeout_s: float = Field(default=10.0, gt=0, description="group session timeout")
    engine: Literal["batch", "faust"] = Field(
        default="batch",
        description="stream engine: batch (aiokafka batches + changelog) or faust (agents)",
    )
    take_max: int = Field(default=10000, ge=1, description="max events per stream batch")
    take_within_ms: float = Field(default=200.0, gt=0, description="max wait to fill a batch")
    commit_interval_s: float = Field(
        default=1.0, gt=0,
        description="offset commit interval of the Faust engine (the batch engine: every batch)",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="worker/optimizer log lines: text or JSON objects")
    web_port: int | None = Field(default=None, description="worker web server port; unset = off")
    optimizer_web_port: int | None = Field(
        default=None, description="optimizer /metrics port; unset = WEB_PORT (give it another "
                                  "one when a worker runs on the same host)")

    # PostgreSQL
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://...; unset = demo starts an embedded PostgreSQL"
    )
    migration_database_url: SecretStr | None = Field(
        default=None, description="owner-role DSN for `shelfcast migrate` (default DATABASE_URL)")
    database_runtime_role: str | None = Field(
        default=None, description="role `shelfcast migrate` grants run-time rights to")
    migrate_on_start: bool = Field(
        default=True, description="optimizer applies migrations itself (off with a runtime role)")

    # Windows and forecasting
    bucket: Literal["daily", "hourly"] = "daily"
    window_buckets: int = Field(default=56, ge=7, description="buckets kept per (sku, location)")
    allowed_lateness_buckets: int = Field(default=1, ge=0)
    dedupe_buckets: int | None = Field(
        default=None, ge=1,
        description="buckets an event id is remembered: a redelivery within them is a "
                    "duplicate, not late; unset = WINDOW_BUCKETS")
    horizon_buckets: int = Field(default=14, ge=1)
    # A plain name: the forecaster registry (forecasting/) is a floor above runtime/, so the
    # name is checked where a model is built (streams.forecaster_setup.model_info, the CLI).
    # The default is the trained model that wins on the average over the real data sets
    # (benchmarks/README.md, "Generalisation"): lstm_lgbm, the LSTM mixed per quantile level
    # with the LightGBM peer; a baseline is served only when asked for by name
    # (SHELFCAST_MODEL=moving_average).
    model: str = Field(default="lstm_lgbm", min_length=1,
                       description="forecaster the workers serve (a registered name)")
    model_path: Path | None = Field(
        default=None, description="trained model directory (`shelfcast train --out`); the "
                                  "default model (lstm_lgbm) needs one")
    model_poll_s: float = Field(
        default=30.0, gt=0, description="how often a worker checks model_path for a new version")
    max_batch: int = Field(default=512, ge=1, description="inferencer micro-batch size")
    max_wait_ms: float = Field(default=5.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lstm_backend: Literal["auto", "numpy", "torch"] = Field(
        default="auto", description="what runs a served LSTM: auto = numpy on CPU (no torch "
        "needed), torch on CUDA; torch keeps torch on CPU too")

    # Restock defaults for SKUs without a catalog policy
    default_lead_time_days: int = Field(default=7, ge=0)
    default_review_days: int = Field(default=1, ge=0)
    default_service_level: float = Field(default=0.95, gt=0, lt=1)
    default_case_pack: int = Field(default=1, ge=1)
    default_moq: int = Field(default=1, ge=0)
    default_supplier: str = "default"

    # Restock lifecycle and stock freshness (in buckets)
    restock_grace_buckets: int = Field(
        default=2, ge=0, description="buckets past its lead time before an unreceived restock "
        "is overdue (an overdue_restock alert; the stock-out risk stops counting it)")
    stale_stock_buckets: int = Field(
        default=7, ge=1, description="buckets without a stock snapshot or movement before a "
        "stale_stock alert (one per episode)")
    # `optimizer.level_rule.LEVEL_RULES` (runtime imports no domain package; a test keeps the
    # two lists equal), the simulation's forecast policies default to the same rule
    restock_level_rule: Literal["cover_mean", "none"] = Field(
        default="cover_mean", description="how a review sets each SKU's order-up-to level: "
        "cover_mean = the mean of the raw levels of its last ceil((lead + review) / review) "
        "reviews (kept in the SKU's state), none = this review's forecast alone")

    # Optimizer: cross-SKU limits per cycle (README "Constraints"); empty = unconstrained
    supplier_budgets: AmountMap = Field(
        default_factory=dict, description='money per supplier per cycle, JSON {"acme": 5000}')
    supplier_min_order_values: AmountMap = Field(
        default_factory=dict, description="a supplier's cycle order is 0 or at least this")
    location_capacity_units: AmountMap = Field(
        default_factory=dict, description="units a location can receive per cycle")
    constraint_cycle: Literal["day", "week"] = Field(
        default="day", description="budget cycle: the restock bucket's UTC day or ISO week")

    # Ingest guards
    max_payload_bytes: int = Field(default=1_048_576, ge=1)
    dlq_payload_bytes: int = Field(
        default=262_144, ge=0,
        description="a dead letter keeps at most this many bytes of the refused payload (with "
                    "its full length and SHA-256); lowered at start to what the DLQ topic's "
                    "max.message.bytes has room for")

    @field_validator("supplier_budgets", "supplier_min_order_values",
                     "location_capacity_units", mode="before")  # fmt: skip
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f'not a JSON object like {{"acme": 5000}}: {exc}') from exc
        return value

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.shop_topic_prefix, self.topic_prefix)

    def bucket_seconds(self) -> int:
        return 86_400 if self.bucket == "daily" else 3_600

    def public_dict(self) -> dict[str, object]:
        """Settings as plain values for printing: secrets masked."""
        return self.model_dump(mode="json")


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as `SHELFCAST_*` env vars, for a child process (secrets included)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"SHELFCAST_{name.upper()}"] = json.dumps(value) if isinstance(value, dict) else str(
            value)
    return env
