"""A local vendor emulator: the OpenAI and Anthropic wire protocols, with fault injection.

Lets the gateway run and be tested offline, and serves as a zero-latency provider for
benchmarks. Answers are extractive (the prompt sentences that best match the question), so they
are deterministic and show which text a call was given. Usage::

    sandbox = Sandbox(SandboxConfig(port=0))
    await sandbox.start()
    AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="any")  # .../v1
    AsyncAnthropic(base_url=sandbox.base_url, api_key="any")
    sandbox.stats.by_status[429]; sandbox.configure(script=["503", None]); sandbox.reset()
    sandbox.trace_headers[-1]  # the last model request's traceparent, baggage, b3...
    await sandbox.stop()

Endpoints: ``POST /v1/chat/completions`` (OpenAI, JSON or SSE), ``POST /v1/messages``
(Anthropic, JSON or SSE), ``POST /v1/messages/count_tokens``, ``POST /v1/embeddings``
(OpenAI's text-embedding-3-small/-large and ada-002: its documented limits, deterministic
feature-hashing vectors that are not a trained model, see ``embeddings``; Anthropic has no
embeddings API, so its dialect gets a 404), ``GET /v1/models`` (Anthropic shape when
``anthropic-version`` is sent, else OpenAI). Control plane, plain JSON:
``GET /_sandbox/stats``, ``POST /_sandbox/reset``, ``GET|POST /_sandbox/config``.

Per-request headers: ``x-sandbox-fault: <kind>``, ``x-sandbox-latency-ms``,
``x-sandbox-ttft-ms``, ``x-sandbox-tokens-per-s``, ``x-sandbox-retry-after-ms``,
``x-sandbox-tag`` (counted in stats). Fault kinds: an HTTP status (400 401 402 403 404 408 409
413 422 429 500 502 503 504 529) or ``timeout``, ``reset``, ``malformed``, ``midstream_error``,
``stall``, and the ones that quote the prompt back (``echo_400``, ``html_502``,
``midstream_echo``); also as a prompt marker ``[[sandbox-fault:<kind>]]`` or
``[[sandbox-fault:<kind>*N]]``.
See ``faults`` for the precedence and ``settings.SandboxConfig`` for the knobs.
"""

from .cli import main
from .emulator import Sandbox
from .faults import Fault
from .settings import SandboxConfig
from .stats import SandboxStats

__all__ = ["Fault", "Sandbox", "SandboxConfig", "SandboxStats", "main"]
