"""The Prometheus text format (0.0.4) of emulated vLLM servers, with vLLM's metric names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tuner.emulator.simulation import Histogram, ServerCounters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ITL_METRICS = {
    "inter_token_latency": ("vllm:inter_token_latency_seconds",),
    "time_per_output_token": ("vllm:time_per_output_token_seconds",),
    "both": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
}
"""Which name(s) the ITL histogram is exposed under: vLLM ≥ 0.11, older vLLM, or both."""


@dataclass(frozen=True)
class ServerLabels:
    """The labels of one emulated server's series."""

    model_name: str
    server_label: str
    server: str
    namespace: str | None = None

    def render(self, extra: Mapping[str, str] | None = None) -> str:
        pairs = {"model_name": self.model_name}
        if self.namespace:
            pairs["namespace"] = self.namespace
        pairs[self.server_label] = self.server
        pairs.update(extra or {})
        return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _histogram_lines(name: str, labels: ServerLabels, hist: Histogram) -> list[str]:
    lines = []
    cumulative = hist.cumulative()
    for bound, count in zip((*hist.bounds, float("inf")), cumulative, strict=True):
        lines.append(f"{name}_bucket{{{labels.render({'le': _number(bound)})}}} {count}")
    lines.append(f"{name}_sum{{{labels.render()}}} {_number(hist.total)}")
    lines.append(f"{name}_count{{{labels.render()}}} {hist.count}")
    return lines


def render_metrics(servers: Iterable[tuple[ServerLabels, ServerCounters]], itl_metric: str = "both") -> str:
    """The /metrics page of every server, grouped by metric family as the format requires."""
    servers = list(servers)
    families: list[tuple[str, str, str, list[str]]] = []

    def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
        families.append((name, kind, help_text, lines))

    family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
           [f"vllm:num_requests_running{{{lb.render()}}} {c.running}" for lb, c in servers])  # fmt: skip
    family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           [f"vllm:num_requests_waiting{{{lb.render()}}} {c.waiting}" for lb, c in servers])  # fmt: skip
    family("vllm:request_success_total", "counter", "Count of successfully processed requests.",
           [f"vllm:request_success_total{{{lb.render({'finished_reason': 'length'})}}} {c.requests_success}"
            for lb, c in servers])  # fmt: skip
    family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
           [f"vllm:generation_tokens_total{{{lb.render()}}} {c.generation_tokens}" for lb, c in servers])  # fmt: skip
    family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
           [f"vllm:prompt_tokens_total{{{lb.render()}}} {c.prompt_tokens}" for lb, c in servers])  # fmt: skip
    def histogram(name: str, help_text: str, pick: Callable[[ServerCounters], Histogram]) -> None:
        family(name, "histogram", help_text, [ln for lb, c in servers for ln in _histogram_lines(name, lb, pick(c))])

    histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
              lambda c: c.queue_time_s)  # fmt: skip
    for name in ITL_METRICS[itl_metric]:
        histogram(name, "Histogram of inter-token latency in seconds.", lambda c: c.inter_token_latency_s)
    histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
              lambda c: c.e2e_latency_s)  # fmt: skip

    out = []
    for name, kind, help_text, lines in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"
